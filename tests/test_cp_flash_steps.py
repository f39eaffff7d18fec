"""A kernel that takes only full/causal steps (sdpa_flash) still runs every strategy on causal:
steps it cannot take whole are cut at the diagonal into full and square causal tiles."""

from __future__ import annotations

from lcab_cli import lcab_run

from lcab.results.store import read_rows


def test_full_causal_only_kernel_under_every_ring_family_strategy(tmp_path):
    store = tmp_path / "r.jsonl"
    p = lcab_run(
        tmp_path,
        "-m",
        "cp=ring,ring_allgather,double_ring",
        "cp.shard=zigzag,contiguous",
        "kernel=sdpa_flash",
        "mask=causal",
        "seqlen=192",
        "cluster.nproc=4",
        "bench.verify=true",
        "bench.iters=1",
        "bench.warmup=0",
        f"store={store}",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    rows = read_rows(store)
    assert len(rows) == 6
    for r in rows:
        assert r["status"] == "ok", (r["config"]["cp"], r["reason"])
        assert r["metrics"]["verify_passed"] is True
