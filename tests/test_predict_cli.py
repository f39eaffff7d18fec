"""python -m lcab.predict as a user runs it: recommend (text and --json), validate on the committed
emulation stores and on a tiny real CPU store (gloo, sdpa_math) calibrated on its own kernel rows,
the calibration file's fitted cells left out of validation, bad input as one line with exit 2;
and the ring timeline against its closed form."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from lcab_cli import ROOT, lcab_run, run_module

from lcab.predict.overlap import ring_hops_layout, ring_time

SUMMARY = re.compile(r"^median \|error\| [\d.]+%, max \|error\| [\d.]+% over (\d+) cells$")
H200 = "docs/results/h200_path_check"
KERNEL_ROWS = [f"{H200}/kernels_new_1.jsonl", f"{H200}/kernels_old_1.jsonl"]


def predict(*args: str, cwd=ROOT, timeout: int = 300):
    return run_module(cwd, "lcab.predict", *args, timeout=timeout)


def test_recommend_json_ranks_every_candidate():
    p = predict("recommend", "cluster_model=h100_dgx_ib", "mask=causal", "seqlen=64k", "world=16", "--json")
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert {"strategy", "shard", "degrees", "tflops_per_gpu", "time_ms", "bottleneck"} <= set(got[0])
    assert [g["time_ms"] for g in got] == sorted(g["time_ms"] for g in got)
    assert {g["strategy"] for g in got} == {"ulysses", "ring", "ring_allgather", "usp", "double_ring"}
    # usp at every power-of-two Ulysses degree inside a node (2, 4, 8), both shards.
    assert sorted({g["degrees"]["ulysses"] for g in got if g["strategy"] == "usp"}) == [2, 4, 8]
    for g in got:  # TFLOPs/s per GPU = mask-aware FLOPs / (time x world)
        flops = 4 * (65536 * 65537 // 2) * 64 * 128
        assert g["tflops_per_gpu"] == pytest.approx(flops / (g["time_ms"] / 1e3 * 16) / 1e12, rel=1e-3)


@pytest.mark.parametrize(
    "args, says",
    [
        (("recommend", "cluster_model=nope", "mask=causal", "seqlen=8k", "world=8"), "cluster_model=nope"),
        (("recommend", "cluster_model=h100_dgx_ib", "mask=causal", "seqlen=8k", "world=2048"), "world=2048"),
        (("recommend", "cluster_model=h100_dgx_ib", "mask=nope", "seqlen=8k", "world=8"), "mask=nope"),
        (("recommend", "cluster_model=h100_dgx_ib", "mask=causal", "world=8"), "seqlen="),
        (
            ("recommend", "cluster_model=h100_dgx_ib", "mask=causal", "seqlen=8k", "world=8", "kernel=x"),
            "kernel x",
        ),
        (("validate", "no/such/store.jsonl"), "no/such/store.jsonl"),
        (("frobnicate",), "frobnicate"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, says):
    p = predict(*args)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lcab: ") and says in lines[0], p.stderr


def test_validate_an_emulation_store_and_leave_out_the_fitted_cells(tmp_path):
    cal = tmp_path / "h200.json"
    # Fitted on kernel rows and on the monolithic times inside emulate_new's rows.
    p = predict(
        "calibrate", "h200x2_nvlink", *KERNEL_ROWS, "--mono", f"{H200}/emulate_new.jsonl", "--out", str(cal)
    )
    assert p.returncode == 0, p.stderr
    fitted = set(json.loads(cal.read_text())["fitted_cells"])
    assert sum(c.startswith(f"{H200}/emulate_new.jsonl#") for c in fitted) == 6
    p = predict(
        "validate", f"{H200}/emulate_new.jsonl", f"{H200}/emulate_old.jsonl", "--calibration", str(cal)
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 13  # 12 cells, then the summary
    assert sum("used for fitting" in line for line in lines) == 6
    n = SUMMARY.match(lines[-1])
    assert n and int(n.group(1)) == 6, lines[-1]
    # Each predicted line names the measured time of its row.
    assert all("measured" in line for line in lines[:-1] if not line.startswith("[skip]"))


def test_validate_a_tiny_real_cpu_store(tmp_path):
    """Kernel rows and a ring cell on 2 gloo ranks from this machine; calibrated on the kernel
    rows, the CP cell is predicted from its plan, its measured busbw and the fit."""
    kern, cp, cal = tmp_path / "kernels.jsonl", tmp_path / "cp.jsonl", tmp_path / "cpu.json"
    common = (
        "kernel=sdpa_math",
        "mask=causal",
        "shape=small",
        "bench.mode=fwd",
        "bench.warmup=1",
        "bench.iters=3",
    )
    p = lcab_run(
        tmp_path, "-m", "seqlen=256,512,1024", *common, f"store={kern}", f"hydra.sweep.dir={tmp_path / 's'}"
    )
    assert p.returncode == 0, p.stderr[-2000:]
    p = lcab_run(tmp_path, "cp=ring", "cluster.nproc=2", "seqlen=1024", *common, f"store={cp}")
    assert p.returncode == 0, p.stderr[-2000:]
    p = predict("calibrate", "cpu_gloo", str(kern), "--out", str(cal))
    assert p.returncode == 0, p.stderr
    p = predict("validate", str(cp), "--calibration", str(cal))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2 and "sdpa_math ring(zigzag) causal S=1024 fwd w2" in lines[0], lines
    assert SUMMARY.match(lines[-1]).group(1) == "1"


def test_ring_timeline_matches_its_closed_form():
    """Even compute C per step and a hop P: R - 1 hops at max(C, P) each, then the last step."""
    r = 8
    for c, p in ((1.0, 0.5), (1.0, 3.0)):
        hops = ring_hops_layout(r, 1, np.full(r, p), np.full(r, p))
        assert ring_time(np.full((r, r), c), hops) == pytest.approx(np.full(r, (r - 1) * max(c, p) + c))
    # One slow hop (e.g. between nodes) slows every member after it, once per step.
    hop = np.full(r, 0.1)
    hop[4] = 2.0
    t = ring_time(np.full((r, r), 1.0), ring_hops_layout(r, 1, hop, hop))
    assert t.max() == pytest.approx((r - 1) * 2.0 + 1.0)
    # Double ring: an outer hop of 2 windows x 4 hides under a window's 4 steps of compute.
    t2 = ring_time(np.full((r, r), 1.0), ring_hops_layout(r, 2, np.full(r, 0.1), np.full(r, 3.5)))
    assert t2.max() == pytest.approx(r * 1.0)
