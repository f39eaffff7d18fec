"""Sweeps that survive: kill-and-resume, OOM and timeouts recorded, W&B runs per cell + table.

Every test runs the real `python -m lcab.run` in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import threading
import time

import pytest
from lcab_cli import clean_env as env
from lcab_cli import lcab_run as lcab
from lcab_cli import rows
from wandb_records import payloads, summary_and_config

FAST = ("kernel=sdpa_math", "bench.warmup=1", "bench.l2_flush=false")


def test_killed_sweep_resumes_every_cell_exactly_once(tmp_path):
    store = tmp_path / "res.jsonl"
    # Four short cells, the third one long (seconds); SIGTERM lands while the third one runs.
    args = ("-m", "seqlen=256", "bench.iters=3,4,3000,5", f"store={store}", *FAST)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lcab.run", *args],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # lcab says "[run ] <cell>" on stderr once a cell is under its stop handler: wait for the
    # third cell's line (however long a busy machine takes), then stop it.
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.time() + 180
    while sum(line.startswith("[run ]") for line in err_lines) < 3 and time.time() < deadline:
        assert proc.poll() is None, "".join(err_lines)[-2000:]
        time.sleep(0.02)
    assert len(rows(store)) == 2, "".join(err_lines)[-2000:]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    reader.join(10)
    err = "".join(err_lines)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    first = rows(store)
    assert [r["status"] for r in first] == ["ok", "ok", "interrupted"], err[-2000:]
    assert first[2]["reason"] == "SIGTERM during the cell"
    assert first[2]["config"]["bench"]["iters"] == 3000

    p = lcab(tmp_path, *args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sum(line.startswith("[skip]") for line in p.stdout.splitlines()) == 2
    ok = [r for r in rows(store) if r["status"] == "ok"]
    # Every cell exactly once among the results; the interrupted one was rerun, the rest skipped.
    assert sorted(r["config"]["bench"]["iters"] for r in ok) == [3, 4, 5, 3000]
    assert len({r["cell_id"] for r in ok}) == 4
    assert len(rows(store)) == 5  # + the one interrupted row, kept: the store is append-only


def _cap_address_space() -> None:
    cap = 3 * 2**30  # enough for Python + torch + a small cell; a 32K dense mask is not
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def test_oom_cell_is_recorded_and_the_next_cell_runs(tmp_path):
    store = tmp_path / "res.jsonl"
    cell = ("kernel=torch", "bench.mode=fwd", "bench.iters=2", "bench.warmup=1", "bench.l2_flush=false")
    p = lcab(tmp_path, "-m", "seqlen=32k,256", *cell, f"store={store}", preexec_fn=_cap_address_space)
    assert p.returncode == 0, p.stderr[-3000:]
    got = rows(store)
    assert [(r["config"]["seqlen"], r["status"]) for r in got] == [(32768, "oom"), (256, "ok")]
    assert "allocate" in got[0]["reason"]
    assert "[  E] torch none causal S=32768" in p.stdout
    # An oom is a fact about the cell on this machine: a resumed sweep skips it unless asked.
    p = lcab(tmp_path, "-m", "seqlen=32k", *cell, f"store={store}", preexec_fn=_cap_address_space)
    assert p.returncode == 0 and "[skip]" in p.stdout, p.stdout[-2000:]
    assert len(rows(store)) == 2


def test_cell_over_its_time_limit_is_recorded_and_the_sweep_goes_on(tmp_path):
    store = tmp_path / "res.jsonl"
    t0 = time.time()
    p = lcab(
        tmp_path,
        "-m",
        "bench.iters=10000000,2",  # the first cell would take hours; the second well under a second
        "seqlen=256",
        "bench.timeout_s=10",  # 10 s: ample for the short cell on a loaded machine
        f"store={store}",
        *FAST,
    )
    assert p.returncode == 1, p.stderr[-3000:]  # the sweep went on, and says a cell errored
    got = rows(store)
    assert [r["status"] for r in got] == ["error", "ok"], [r["reason"] for r in got]
    assert got[0]["reason"] == "timeout after 10 s"
    assert got[0]["config"]["bench"]["iters"] == 10000000
    assert time.time() - t0 < 150  # the limit ended the long cell


def test_wandb_offline_one_run_per_cell_and_a_sweep_table(tmp_path):
    store = tmp_path / "res.jsonl"
    p = lcab(
        tmp_path,
        "-m",
        "logger=wandb",
        "mask=causal,full",
        "seqlen=256",
        "bench.iters=2",
        "hydra.sweep.dir=sweep",
        f"store={store}",
        *FAST,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    by_id = {r["cell_id"]: r for r in rows(store)}
    cells, sweeps = {}, []
    for run_dir in tmp_path.rglob("offline-run-*"):
        (run_file,) = run_dir.glob("*.wandb")
        summary, config = summary_and_config(run_file)
        if "cell_id" in config:
            cells[config["cell_id"]] = (summary, config, run_file)
        else:
            sweeps.append((summary, run_dir, run_file))
    assert set(cells) == set(by_id)  # one run per cell
    for cid, (summary, config, run_file) in cells.items():
        row = by_id[cid]
        assert summary["tflops"] == pytest.approx(row["metrics"]["tflops"])
        assert summary["status"] == "ok"
        assert config["mask.name"] == row["config"]["mask"]["name"]
        assert config["world"] == 1
        # Named from kernel/cp/mask/seqlen/world, grouped by the sweep.
        raw = b"".join(payloads(run_file))
        assert f"sdpa_math-none-{row['config']['mask']['name']}-256-w1".encode() in raw
        assert b"sweep" in raw
    (summary, run_dir, run_file), *_ = sweeps
    assert len(sweeps) == 1
    assert summary["n_cells"] == 2 and summary["n_ok"] == 2
    tables = list(run_dir.rglob("cells_*.table.json"))
    assert len(tables) == 1, list(run_dir.rglob("*"))
    table = json.loads(tables[0].read_text())
    assert "tflops" in table["columns"] and len(table["data"]) == 2
