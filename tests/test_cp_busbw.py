"""Per-kind comm accounting and the busbw probe: the nccl-tests factors, per-kind bytes of a ring
against hand-computed K/V block sizes (gloo pools, as in test_cp_matrix), and a CP cell through
`python -m lcab.run` whose row carries a bandwidth for every kind of collective it used."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from lcab_cli import lcab_run, rows
from test_cp_cli import FAST

from lcab.cp.busbw import bus_factor
from lcab.cp.comm import Op
from lcab.cp.selfcheck import case_config
from lcab.cp.tokens import local_inputs
from lcab.harness.inputs import inputs_for
from lcab.harness.verify import kernel_outputs
from lcab.pipeline import execute_rank
from lcab.pipeline.prepare import open_cell, prepare
from lcab.plan import Cell


@pytest.mark.parametrize(
    ("op", "n", "want"),
    [
        (Op.ALL_REDUCE, 2, 1.0),  # 2(n-1)/n
        (Op.ALL_REDUCE, 8, 1.75),
        (Op.ALL_GATHER, 4, 0.75),  # (n-1)/n
        (Op.REDUCE_SCATTER, 8, 0.875),
        (Op.ALL_TO_ALL, 2, 0.5),
        (Op.P2P, 8, 1.0),  # a ring hop moves its whole buffer over one link
    ],
)
def test_bus_factor_is_nccl_tests_convention(op, n, want):
    assert bus_factor(op, n) == pytest.approx(want)


def comm_stats(config: dict) -> list | None:
    """One forward + backward of the cell; every rank's per-kind record, on rank 0."""
    dev = torch.device("cpu")
    rank = dist.get_rank()
    prep = prepare(Cell(config, "busbw"), dev, rank, dist.get_world_size())
    run = open_cell(prep, config["cp"], dev)

    def fn(q, k, v):
        return prep.strategy.attention(q, k, v, prep.plan, run), None

    kernel_outputs(fn, local_inputs(inputs_for(prep.shape, prep.mask, 0), prep.shard, rank), True)
    s = run.comm.stats
    mine = {
        "bytes_sent": s.bytes_sent,
        "calls": dict(s.calls),
        "bytes": dict(s.bytes_by_kind),
        "kinds": {k: (str(i.op), i.group_size, i.size_bytes, i.peers) for k, i in s.kinds.items()},
    }
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return every if rank == 0 else None


def run_cells(configs: list[dict]) -> list:
    """The cell pipeline's rank path (timing, instrumented pass, probe) for each config; rows on rank 0."""
    return [execute_rank(Cell(c, "busbw"), torch.device("cpu")) for c in configs]


@pytest.mark.parametrize("world", [2, 4])
def test_ring_bytes_per_kind_are_kv_block_sizes(pools, world):
    seqlen, hkv, d = 128, 2, 16
    cfg = case_config("ring", seqlen=seqlen, world=world, heads=(4, hkv), head_dim=d, dtype="fp32")
    every = pools(world).run(comm_stats, cfg, timeout_s=300)
    local = seqlen // world  # zigzag, no padding at 128 tokens
    hop = 2 * local * hkv * d * 4  # K and V of one rank's block, fp32, batch 1
    dkv_hop = 2 * local * hkv * d * 8  # dK/dV travel in the fp64 accumulator of fp32 inputs
    want_calls = {"ring_kv": world - 1, "ring_kv_bwd": world - 1, "ring_dkv": world}
    want_hop = {"ring_kv": hop, "ring_kv_bwd": hop, "ring_dkv": dkv_hop}
    for r, e in enumerate(every):
        assert e["calls"] == want_calls
        assert e["bytes"] == {k: want_calls[k] * want_hop[k] for k in want_calls}
        assert sum(e["bytes"].values()) == e["bytes_sent"]
        for k, (op, n, size, (to, frm)) in e["kinds"].items():
            assert (op, n, size) == ("p2p", world, want_calls[k] * want_hop[k])
            assert to != r and frm != r


def test_probe_reports_collectives_and_can_be_switched_off(pools):
    w = 4
    kw = {"world": w, "heads": (8, 4), "dtype": "fp32", "mode": "fwd_bwd"}
    cfgs = [case_config(n, **kw) for n in ("ring_allgather", "ulysses")]
    cfgs.append(case_config("ring", busbw=False, **kw))
    ag, uly, off = pools(w).run(run_cells, cfgs, timeout_s=300)
    assert [r.status for r in (ag, uly, off)] == ["ok"] * 3, [r.reason for r in (ag, uly, off)]
    assert "coll_busbw" not in off.metrics and off.metrics["rank_calls"][0]["ring_kv"] == w - 1
    for res, ops in ((ag, {"all_gather", "reduce_scatter"}), (uly, {"all_to_all"})):
        bw = res.metrics["coll_busbw"]
        assert set(bw) == set(res.metrics["rank_calls"][0])
        assert {b["ops"] for b in bw.values()} == ops
        for b in bw.values():
            assert b["group"] == w
            assert b["busbw_gbps"] == pytest.approx(b["algbw_gbps"] * (w - 1) / w)
    # The all-gather's nccl-tests size is its output: every rank's K/V block, world x sent / (w-1).
    sent = ag.metrics["rank_bytes_by_kind"][0]["allgather_kv"] / ag.metrics["rank_calls"][0]["allgather_kv"]
    assert ag.metrics["coll_busbw"]["allgather_kv"]["bytes"] == sent * w / (w - 1)


def test_cli_ring_row_has_busbw_for_every_kind(tmp_path):
    store = tmp_path / "res.jsonl"
    p = lcab_run(tmp_path, "cp=ring", "cluster.nproc=2", "mask=causal", f"store={store}", *FAST)
    assert p.returncode == 0, p.stderr[-3000:]
    (r,) = rows(store)
    assert r["status"] == "ok", r["reason"]
    m = r["metrics"]
    bw = m["coll_busbw"]
    kinds = {k for calls in m["rank_calls"] for k in calls}
    assert kinds == {"ring_kv", "ring_kv_bwd", "ring_dkv"} and set(bw) == kinds
    for k, b in bw.items():
        assert b["ops"] == "p2p" and b["group"] == 2
        for x in (b["ms"], b["algbw_gbps"], b["busbw_gbps"]):
            assert x > 0 and math.isfinite(x), (k, b)
        assert b["algbw_gbps"] == pytest.approx(b["bytes"] / b["ms"] / 1e6)  # B/ms -> GB/s
        assert b["busbw_gbps"] == pytest.approx(b["algbw_gbps"])  # a hop's factor is 1
        # The probe's message is the cell's own per-call size (every rank sends equal blocks).
        per_call = [e[k] / c[k] for e, c in zip(m["rank_bytes_by_kind"], m["rank_calls"], strict=True)]
        assert b["bytes"] == max(per_call) > 0


def test_busbw_switch_keeps_the_cell_id():
    """cp.busbw adds a measurement after the timed calls: a store written before (or with the
    probe off) must still resume, so the switch is not part of the cell id; cp.shard is."""
    from lcab.compose import compose_config
    from lcab.plan import plan_cell

    base = ["cp=ring", "cluster.nproc=2", "bench.device=cpu", "seqlen=128"]
    on = plan_cell(compose_config([*base, "cp.busbw=true"])).cell_id
    off = plan_cell(compose_config([*base, "cp.busbw=false"])).cell_id
    other = plan_cell(compose_config([*base, "cp.shard=balanced"])).cell_id
    assert on == off and on != other
