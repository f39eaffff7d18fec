"""Multi-rank sweeps through real launchers: torchrun with 2 ranks, and Slurm with 2 tasks.

CPU and gloo throughout; the Slurm test runs a real slurmctld/slurmd (see slurm_fixture).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from lcab_cli import clean_env as env
from lcab_cli import rows

from lcab.launch.distributed import GROUP_UP

CELL = ("seqlen=256", "kernel=sdpa_math", "bench.iters=2", "bench.warmup=1", "bench.l2_flush=false")


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


def _wait(cond, timeout_s: float = 120.0, every_s: float = 0.2) -> bool:
    """Polls cond() until it is true or timeout_s has passed; returns its last value."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(every_s)
    return bool(cond())


def _group_up(logs) -> bool:
    """Both tasks have logged that the process group is up (every rank joined), which each does
    inside its cell, where lcab's stop-signal handler is set."""
    outs = list(logs.rglob("*_log.out"))
    return len(outs) == 2 and all(GROUP_UP in o.read_text() for o in outs)


def _rank_pid(job_id: str, rank: int, e: dict) -> int | None:
    """The pid of a job step's task with this global rank (scontrol listpids)."""
    out = subprocess.run(["scontrol", "listpids", job_id], env=e, capture_output=True, text=True).stdout
    for line in out.splitlines()[1:]:
        pid, _, step, _, grank = (line.split() + [""] * 5)[:5]
        if step == "0" and grank == str(rank):
            return int(pid)
    return None


def test_slurm_dead_rank_ends_its_job_with_a_clear_error(tmp_path, slurm):
    store = tmp_path / "res.jsonl"
    e = env(**slurm)
    cmd = [sys.executable, "-m", "lcab.run", "-m", "cluster=slurm", "cluster.tasks_per_node=2"]
    cmd += ["cluster.gpus_per_node=0", "cp=ring", *CELL, "bench.iters=1000000", f"store={store}"]
    cmd += ["hydra.sweep.dir=sweep"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    logs = tmp_path / "sweep" / ".submitit"
    # Kill rank 1 only once every rank joined: earlier, rank 0 would wait in the rendezvous
    # (up to its 120 s timeout) rather than see its peer go.
    started = _wait(lambda: _group_up(logs) or proc.poll() is not None) and _group_up(logs)
    assert started, proc.communicate(timeout=60)[1][-2000:]
    pid = _rank_pid(next(logs.rglob("*_1_log.out")).name.split("_")[0], 1, e)
    assert pid, proc.communicate(timeout=60)[1][-2000:]
    os.kill(pid, signal.SIGKILL)
    t0 = time.time()
    _, err = proc.communicate(timeout=120)
    assert time.time() - t0 < 90  # never a hang (the collective timeout alone would be 120 s)
    assert proc.returncode != 0
    # submitit's error names the job's state and either the dead task itself ("(task: 1)")
    # or task 0, whose error stream then carries srun's "task 1: Killed".
    assert "state: FAILED" in err, err[-2000:]
    assert "(task: 1)" in err or "task 1: Killed" in err, err[-2000:]
    # Rank 0 saw its peer go (gloo: connection closed: error), or srun stopped it (SIGTERM:
    # interrupted) or killed it (no row): never an ok row, and a rerun runs the cell again.
    assert all(r["status"] in ("error", "interrupted") for r in rows(store)), rows(store)
    assert len(rows(store)) <= 1


def test_slurm_preemption_records_interrupted_and_the_requeued_job_finishes(tmp_path, slurm):
    store = tmp_path / "res.jsonl"
    e = env(**slurm)
    cmd = [sys.executable, "-m", "lcab.run", "-m", "cluster=slurm", "cluster.tasks_per_node=2"]
    cmd += ["cluster.gpus_per_node=0", "cp=ring", *CELL, "bench.iters=300", f"store={store}"]
    cmd += ["hydra.sweep.dir=sweep"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    logs = tmp_path / "sweep" / ".submitit"

    # Signal only once both tasks are in their cells (GROUP_UP), where lcab's stop-signal
    # handler is set: an earlier signal would reach submitit only.
    started = _wait(lambda: _group_up(logs) or proc.poll() is not None) and _group_up(logs)
    assert started, proc.communicate(timeout=60)[1][-2000:]
    job = next(logs.rglob("*_0_log.out")).name.split("_")[0]
    # What a preempting scheduler (or the time limit) sends through submitit's --signal.
    subprocess.run(["scancel", "--signal=USR2", job], env=e, check=True)
    _wait(lambda: bool(rows(store)))
    assert [r["status"] for r in rows(store)] == ["interrupted"], proc.communicate(timeout=60)[1][-3000:]
    assert rows(store)[0]["reason"] == "SIGUSR2 during the cell"

    # submitit requeued the job; Slurm starts it again by itself once the old run's step
    # credentials expire (cred_expire, 10 s on the test cluster). Releasing it earlier by hand
    # makes the restart fail with "Job credential revoked", as it would on any cluster.
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert [r["status"] for r in rows(store)] == ["interrupted", "ok"]
    assert "lcab sweep: 1 cell (1 ok)" in out
