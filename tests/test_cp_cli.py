"""CP cells through `python -m lcab.run` subprocesses: local pools, rows with per-rank metrics,
failure handling (crashing or hanging rank), recorded statuses, one-device emulation."""

from __future__ import annotations

import pytest
from lcab_cli import lcab_run, rows

FAST = ("bench.warmup=1", "bench.iters=3", "kernel=sdpa_math", "seqlen=256", "bench.device=cpu")


def test_ring_nproc2_writes_ok_row_with_per_rank_metrics(tmp_path):
    store = tmp_path / "res.jsonl"
    p = lcab_run(
        tmp_path,
        "cp=ring",
        "cluster.nproc=2",
        "mask=causal_document",
        "bench.verify=true",
        f"store={store}",
        *FAST,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    (r,) = rows(store)
    assert r["status"] == "ok", r["reason"]
    m = r["metrics"]
    assert m["verify_passed"] is True
    for key in (
        "rank_time_ms_p50",
        "rank_compute_ms",
        "rank_exposed_comm_ms",
        "rank_bytes_sent",
        "rank_collectives",
        "rank_area",
        "rank_peak_rss_gib",
    ):
        assert len(m[key]) == 2, key
    assert all(b > 0 for b in m["rank_bytes_sent"])
    assert m["rank_calls"][0]["ring_kv"] == 1  # W-1 forward hops
    assert m["area_imbalance"] >= 1.0 and sum(m["rank_area"]) == pytest.approx(m["area"])
    # Per-GPU TFLOPs/s from the max-over-ranks median time and the world size.
    assert m["tflops"] == pytest.approx(m["flops"] / (m["time_ms_p50"] / 1e3 * 2) / 1e12)
    assert m["time_ms_p50"] >= max(m["rank_time_ms_p50"]) * 0.999 or len(m["times_ms"]) == 3


def test_multirun_reuses_one_pool(tmp_path):
    store = tmp_path / "res.jsonl"
    p = lcab_run(
        tmp_path,
        "-m",
        "cp=ulysses,ring_allgather,double_ring",
        "cluster.nproc=2",
        "mask=causal",
        f"store={store}",
        *FAST,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = rows(store)
    assert [r["status"] for r in got] == ["ok"] * 3, [r["reason"] for r in got]


@pytest.mark.parametrize("kind", ["raise", "hang"])
def test_failing_rank_fails_the_job_fast(tmp_path, kind):
    store = tmp_path / "res.jsonl"
    # A hang would last the default collective timeout (120 s) per collective; with 10 s the
    # job must end by itself (the runner's limit, generous for a loaded machine, is the guard).
    lcab_run(
        tmp_path,
        "cp=ring",
        "cluster.nproc=2",
        f"store={store}",
        *FAST,
        env={"LCAB_FAULT_RANK": "1", "LCAB_FAULT_KIND": kind, "LCAB_COLLECTIVE_TIMEOUT_S": "10"},
        timeout=300,
    )
    (r,) = rows(store)
    assert r["status"] == "error"
    if kind == "raise":
        assert "rank 1" in r["reason"] and "injected fault" in r["reason"]
    else:  # rank 0's collective timed out while rank 1 hung
        assert "rank 0" in r["reason"], r["reason"]


def test_unsupported_combination_is_a_recorded_status(tmp_path):
    store = tmp_path / "res.jsonl"
    args = [a for a in FAST if not a.startswith("kernel=")]
    p = lcab_run(
        tmp_path,
        "-m",
        "cp=ring",
        "kernel=sdpa_flash",
        "mask=causal_document",
        "cluster.nproc=2",
        f"store={store}",
        *args,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    (r,) = rows(store)
    assert r["status"] == "unsupported"
    assert "sdpa_flash" in r["reason"] and "causal_document" in r["reason"]


def test_constraint_errors_are_clear(tmp_path):
    store = tmp_path / "res.jsonl"
    p = lcab_run(
        tmp_path,
        "-m",
        "cp=ulysses",
        "cluster.nproc=2",
        "shape.heads_q=3",
        "shape.heads_kv=3",
        f"store={store}",
        *FAST,
    )
    # Found before any worker starts (lcab/plan.py preflight): a config error, exit 2, one line.
    assert p.returncode == 2, p.stderr[-3000:]
    assert "lcab: " in p.stderr and "[run ]" not in p.stderr
    p = lcab_run(tmp_path, "-m", "cp=ring", "cluster.nproc=1", f"store={store}", *FAST)
    assert p.returncode == 1, p.stderr[-3000:]  # an error cell fails the command
    got = rows(store)
    assert got[0]["status"] == "error" and "ulysses degree 2 does not divide 3 q heads" in got[0]["reason"]
    assert (
        got[1]["status"] == "error"
        and "ring needs world > 1; set cluster.nproc or cp.emulate" in got[1]["reason"]
    )


def test_emulation_reports_per_rank_compute_and_efficiency(tmp_path):
    store = tmp_path / "res.jsonl"
    p = lcab_run(
        tmp_path,
        "-m",
        "cp=ring,ring_allgather",
        "cp.emulate=4",
        "cp.shard=balanced",
        "mask=causal",
        f"store={store}",
        *FAST,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    for r in rows(store):
        assert r["status"] == "ok", r["reason"]
        m = r["metrics"]
        assert len(m["rank_compute_ms"]) == 4 and m["compute_ms_max"] == max(m["rank_compute_ms"])
        assert m["compute_efficiency"] == pytest.approx(m["mono_ms"] / 4 / m["compute_ms_max"])
        assert m["area_imbalance"] < 1.1
