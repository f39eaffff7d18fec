"""scripts/gpu_paper_kernels.sh (through scripts/_sweep.sh) on the CPU with a tiny grid: both
passes land in their stores, and a second run resumes instead of repeating a cell."""

import os
import subprocess
from pathlib import Path

from lcab.results.store import read_rows

ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path) -> str:
    env = {**os.environ, "LCAB_PK_DIR": str(out)}
    over = ["kernel=sdpa", "mask=full,causal", "bench.device=cpu", "shape=small", "seqlen=256"]
    p = subprocess.run(
        ["bash", "scripts/gpu_paper_kernels.sh", "300", *over],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def _rows(path: Path) -> list[dict]:
    return read_rows(path)


def test_paper_kernels_script_runs_both_passes_and_resumes(tmp_path):
    log = _run(tmp_path)
    assert "== verify exit 0" in log and "== results exit 0" in log
    verify, results = _rows(tmp_path / "verify.jsonl"), _rows(tmp_path / "results.jsonl")
    assert sorted((r["config"]["mask"]["name"], r["metrics"]["verify_passed"]) for r in verify) == [
        ("causal", True),
        ("full", True),
    ]
    cells = sorted((r["config"]["mask"]["name"], r["config"]["bench"]["mode"]) for r in results)
    assert cells == [("causal", "bwd"), ("causal", "fwd"), ("full", "bwd"), ("full", "fwd")]
    assert {r["status"] for r in results} == {"ok"}
    _run(tmp_path)
    assert len(_rows(tmp_path / "verify.jsonl")) == 2 and len(_rows(tmp_path / "results.jsonl")) == 4
