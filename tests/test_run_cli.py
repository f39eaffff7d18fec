"""Real `python -m lcab.run` subprocesses: results rows, W&B offline files, clear errors."""

from __future__ import annotations

import pytest
from lcab_cli import lcab_run, rows
from wandb_records import summary_and_config

FAST = ("bench.warmup=1", "bench.iters=3", "kernel=sdpa_math")


def test_multirun_writes_four_ok_rows(tmp_path):
    store = tmp_path / "res.jsonl"
    p = lcab_run(tmp_path, "-m", "mask=causal,causal_doc", "seqlen=1k,2k", f"store={store}", *FAST)
    assert p.returncode == 0, p.stderr[-3000:]
    got = rows(store)
    assert len(got) == 4
    assert all(r["status"] == "ok" for r in got), [r["reason"] for r in got]
    assert {(r["config"]["mask"]["name"], r["config"]["seqlen"]) for r in got} == {
        ("causal", 1024),
        ("causal", 2048),
        ("causal_document", 1024),
        ("causal_document", 2048),
    }
    assert len({r["cell_id"] for r in got}) == 4
    for r in got:
        m = r["metrics"]
        # TFLOPs/s is recomputed here from the row's own area, shape and median time.
        s = r["config"]["shape"]
        flops = 4 * m["area"] * s["heads_q"] * s["head_dim"] * s["batch"] * 3.5
        assert m["flops"] == flops
        assert m["tflops"] == pytest.approx(flops / (m["time_ms_p50"] / 1e3) / 1e12)
        assert r["env"]["torch"] and r["env"]["git_sha"]
    causal_1k = next(
        r for r in got if r["config"]["mask"]["name"] == "causal" and r["config"]["seqlen"] == 1024
    )
    assert causal_1k["metrics"]["area"] == 1024 * 1025 // 2
    # A rerun of the same sweep skips every ok cell: still exactly 4 rows.
    p = lcab_run(tmp_path, "-m", "mask=causal,causal_doc", "seqlen=1k,2k", f"store={store}", *FAST)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(rows(store)) == 4
    assert sum(line.startswith("[skip]") for line in p.stdout.splitlines()) == 4


def test_wandb_offline_run_holds_metrics(tmp_path):
    store = tmp_path / "res.jsonl"
    p = lcab_run(tmp_path, "logger=wandb", "mask=causal", "seqlen=512", f"store={store}", *FAST)
    assert p.returncode == 0, p.stderr[-3000:]
    row = rows(store)[0]
    run_dirs = list(tmp_path.rglob("offline-run-*"))
    assert len(run_dirs) == 1, run_dirs
    (run_file,) = run_dirs[0].glob("*.wandb")
    summary, config = summary_and_config(run_file)
    assert summary["tflops"] == pytest.approx(row["metrics"]["tflops"])
    assert summary["time_ms_p50"] == pytest.approx(row["metrics"]["time_ms_p50"])
    assert summary["status"] == "ok"
    assert "cell_id" in config and "kernel.name" in config


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("mask=nosuchmask",), "nosuchmask"),
        (("seqlen=abc",), "seqlen 'abc' is not a length"),
        (("shape.heads_q=6", "shape.heads_kv=4"), "heads_q 6 is not divisible by heads_kv 4"),
        (("bench.iterz=3",), "iterz"),
    ],
)
def test_invalid_input_one_clear_line(tmp_path, args, needle):
    p = lcab_run(tmp_path, *args, f"store={tmp_path / 'r.jsonl'}")
    assert p.returncode != 0
    assert needle in p.stderr
    assert "Traceback" not in p.stderr


def test_missing_kernel_package_is_recorded_not_raised(tmp_path):
    store = tmp_path / "res.jsonl"
    p = lcab_run(tmp_path, "-m", "kernel=flash3,cudnn", "mask=causal_doc", "seqlen=512", f"store={store}")
    assert p.returncode == 0, p.stderr[-3000:]
    got = rows(store)
    assert [r["status"] for r in got] == ["unavailable", "unavailable"]
    assert all(r["reason"] for r in got)
    assert "Traceback" not in p.stderr


def test_issue_command_with_cp_records_unavailable(tmp_path):
    """`kernel=flash3 cp=ring mask=causal_doc -m` is valid: the missing kernel is the recorded fact."""
    store = tmp_path / "res.jsonl"
    p = lcab_run(tmp_path, f"store={store}", "kernel=flash3", "cp=ring", "mask=causal_doc", "-m")
    assert p.returncode == 0, p.stderr[-3000:]
    (row,) = rows(store)
    assert row["status"] == "unavailable" and "flash3" in row["reason"]
    assert "Traceback" not in p.stderr


def test_default_run_on_cpu_uses_the_small_shape(tmp_path):
    # Its wall time is a benchmark figure (README / closing note), not a timed assertion.
    p = lcab_run(tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    row = rows(next(tmp_path.rglob("results.jsonl")))[0]
    assert row["status"] == "ok"
    assert row["config"]["shape"]["dtype"] == "fp32" and row["config"]["seqlen"] == 1024
