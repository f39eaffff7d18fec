"""Process groups belong to their cell: a sweep whose cells need different extra groups (double
ring windows) gets each cell's own groups, not the previous cell's."""

from __future__ import annotations

from lcab_cli import lcab_run, rows


def test_double_ring_window_sweep_uses_each_cells_groups(tmp_path):
    store = tmp_path / "r.jsonl"
    p = lcab_run(
        tmp_path,
        "-m",
        "cp=double_ring",
        "cp.windows=3,0",
        "cluster.nproc=3",
        "mask=sliding_window_causal",
        "seqlen=1000",
        "bench.iters=1",
        "bench.warmup=0",
        f"store={store}",
    )
    got = rows(store)
    assert [r["status"] for r in got] == ["ok", "ok"], [r["reason"] for r in got]
    assert sorted(r["metrics"]["windows"] for r in got) == [1, 3]
    assert p.returncode == 0, p.stderr[-3000:]
