"""Issue 16's preset, efficiency column and README table on a tiny store made by real runs
(gloo, sdpa_math, 256 tokens): every CP cell finds its cp=none baseline at the same total length."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lcab_cli import clean_env, lcab_run, rows, run_module

from lcab.report.efficiency import frame
from lcab.report.load import load

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("h200x2")
    p = lcab_run(
        d,
        "-m",
        "+experiment=h200x2",
        "kernel=sdpa_math",
        "cp=none,ulysses,ring",
        "mask=causal",
        "seqlen=256",
        "shape=small",
        "bench.mode=fwd,bwd",
        "bench.warmup=0",
        "bench.iters=2",
        "bench.l2_flush=false",
        "bench.device=cpu",
        f"store={d / 'results.jsonl'}",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return d


def test_every_cp_cell_has_its_baseline_and_efficiency(store):
    got = rows(store / "results.jsonl")
    assert {(r["config"]["cp"]["name"], r["config"]["world"]) for r in got} == {
        ("none", 1),
        ("ulysses", 2),
        ("ring", 2),
    }
    assert all(r["status"] == "ok" and r["config"]["seqlen"] == 256 for r in got)
    base = {
        r["config"]["bench"]["mode"]: r["metrics"]["tflops"]
        for r in got
        if r["config"]["cp"]["name"] == "none"
    }
    f = frame(load([str(store / "results.jsonl")]))
    assert len(f) == 4
    for r in got:
        if r["config"]["cp"]["name"] == "none":
            continue
        mode = r["config"]["bench"]["mode"]
        # Own arithmetic: TFLOPs/s per GPU = FLOPs / (max-over-ranks p50 x world), over the baseline's.
        m = r["metrics"]
        sh = r["config"]["shape"]  # resolved: heads, head_dim and batch of shape=small
        flops = 4 * m["area"] * sh["heads_q"] * sh["head_dim"] * sh["batch"] * (2.5 if mode == "bwd" else 1.0)
        per_gpu = flops / (m["time_ms_p50"] / 1e3 * 2) / 1e12
        assert per_gpu == pytest.approx(m["tflops"], rel=1e-6)
        hit = f[(f["strategy"] == r["config"]["cp"]["name"]) & (f["mode"] == mode)].iloc[0]
        assert hit["efficiency"] == pytest.approx(per_gpu / base[mode], rel=1e-6)
        assert hit["baseline status"] == "ok"
        assert len(hit["rank compute ms"]) == 2


def test_table_and_report_show_the_efficiency(store, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- h200x2 table -->\nold\n<!-- /h200x2 table -->\ntail\n")
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "h200x2_table.py"), str(store), "--readme", str(readme)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean_env(),
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- /h200x2 table -->\ntail\n")
    assert "### 128 tokens per GPU (world 2)" in text
    f = frame(load([str(store / "results.jsonl")]))
    for r in f.to_dict("records"):
        line = [
            x
            for x in text.splitlines()
            if x.startswith(f"| {r['strategy']}/zigzag | sdpa_math | causal | {r['mode']} |")
        ]
        assert len(line) == 1 and f"| {r['efficiency']:.3f}" in line[0], line
    out = tmp_path / "rep"
    p = run_module(tmp_path, "lcab.report", str(store), "--out", str(out))
    assert p.returncode == 0, p.stderr
    eff = (out / "tables" / "cp_efficiency.md").read_text()
    assert "ulysses/zigzag / sdpa_math / causal / 2 / 128" in eff
