"""Multi-rank sweeps through real launchers: torchrun with 2 ranks, and Slurm with 2 tasks.

CPU and gloo throughout; the Slurm test runs a real slurmctld/slurmd (see slurm_fixture).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELL = ("seqlen=256", "kernel=sdpa_math", "bench.iters=2", "bench.warmup=1", "bench.l2_flush=false")
DIST_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def env(**extra: str) -> dict:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true", **extra}
    for k in (*DIST_KEYS, "WANDB_MODE", "SLURM_JOB_ID", "SUBMITIT_FOLDER"):
        e.pop(k, None)
    return e


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_sweep_writes_each_row_once(tmp_path):
    store = tmp_path / "res.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", str(free_port()), "-m", "lcab.run", "-m", "cp=ring,ulysses"]
    cmd += [*CELL, "logger=wandb", f"store={store}"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got = rows(store)
    assert sorted(r["config"]["cp"]["name"] for r in got) == ["ring", "ulysses"], p.stdout[-2000:]
    assert all(r["status"] == "ok" for r in got), [r["reason"] for r in got]
    assert {r["config"]["world"] for r in got} == {2}
    assert {r["config"]["cluster"]["name"] for r in got} == {"torchrun"}
    # Only rank 0 printed rows and wrote Hydra's logs and W&B runs.
    assert p.stdout.count("[ ok] sdpa_math ringx2") == 2  # its row line + the summary table
    assert len(list(tmp_path.rglob("run.log"))) == 2  # Hydra job logs: rank 0 only
    assert len(list(tmp_path.rglob("offline-run-*"))) == 3  # 2 cells + the sweep table
    assert len(list((tmp_path / "outputs" / "sweeps").glob("*/*"))) == 1
    # The same sweep again: all ranks read the same store and skip both cells together.
    p = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(rows(store)) == 2
    assert sum(line.startswith("[skip]") for line in p.stdout.splitlines()) == 2  # rank 0's


def test_slurm_two_tasks_per_cell_on_gloo(tmp_path, slurm):
    store = tmp_path / "res.jsonl"
    cmd = [sys.executable, "-m", "lcab.run", "-m", "hydra/launcher=submitit_slurm", "cluster=slurm"]
    cmd += ["cluster.tasks_per_node=2", "cluster.gpus_per_node=0", "cluster.backend=gloo"]
    cmd += ["cp=ring,ulysses", *CELL, f"store={store}", "hydra.sweep.dir=sweep"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env(**slurm), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got = rows(store)
    assert sorted(r["config"]["cp"]["name"] for r in got) == ["ring", "ulysses"], p.stderr[-2000:]
    assert all(r["status"] == "ok" for r in got), [r["reason"] for r in got]
    assert {r["config"]["world"] for r in got} == {2}
    assert "lcab sweep: 2 cells (2 ok)" in p.stdout
    # Two Slurm jobs (one per cell), each with two tasks: one stdout per task in submitit's folder.
    outs = sorted(p.name for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert len(outs) == 4, outs
    assert {o.rsplit("_", 2)[-2] for o in outs} == {"0", "1"}  # task (rank) 0 and 1 of each job
