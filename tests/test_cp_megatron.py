"""cp.groups=megatron: the ring's process group comes from megatron-core's parallel_state."""

from __future__ import annotations

import pytest
from lcab_cli import lcab_run

from lcab.results.store import read_rows

pytest.importorskip("megatron.core")


def test_ring_on_megatron_groups_verifies(tmp_path):
    store = tmp_path / "r.jsonl"
    common = ("cluster.nproc=2", "kernel=torch", "seqlen=256", "bench.iters=2", "bench.warmup=0")
    p = lcab_run(
        tmp_path,
        "-m",
        "cp=ring,usp",
        "cp.groups=megatron",  # usp's own ulysses_degree (2); ring has none
        "mask=causal_doc",
        "bench.verify=true",
        f"store={store}",
        *common,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    rows = {r["config"]["cp"]["name"]: r for r in read_rows(store)}
    ring = rows["ring"]
    assert ring["status"] == "ok", ring["reason"]
    assert ring["metrics"]["verify_passed"] is True
    assert ring["config"]["cp"]["groups"] == "megatron"
    # Megatron has no Ulysses group: the request is refused, not served by lcab's own mesh.
    assert rows["usp"]["status"] == "unavailable"
    assert "context-parallel ring group only" in rows["usp"]["reason"]
