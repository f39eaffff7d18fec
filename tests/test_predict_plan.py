"""lcab.predict's plan-only path against the real thing: its per-step areas against the strategies'
own plans (tiles cut by lcab.cp.submask), its bytes per kind against what Comm counted in real gloo
runs (W = 2 and 4, S = 256), and a 1024-rank plan that allocates no tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lcab_cli import lcab_run, rows

from lcab.cp import registry
from lcab.cp.base import Topology
from lcab.kernels import registry as kernels
from lcab.predict.planonly import Candidate, build_mask, plan_cell, shape_spec

SMALL = shape_spec(1, 4, 2, 32, "fp32")  # shape=small
TINY = ("kernel=sdpa_math", "seqlen=256", "mask=causal", "shape=small", "bench.mode=fwd_bwd")
TINY += ("bench.warmup=0", "bench.iters=1", "cp.busbw=false")


@pytest.fixture(scope="module")
def gloo_rows(tmp_path_factory) -> list[dict]:
    """Real gloo cells: ulysses, ring_allgather and double_ring (2 windows) on 4 ranks, ring on 2,
    usp 2 x 2."""
    tmp = tmp_path_factory.mktemp("predict_gloo")
    store = tmp / "cp.jsonl"
    runs = [
        ("-m", "cp=ulysses,ring_allgather,double_ring", "cluster.nproc=4"),
        ("cp=ring", "cluster.nproc=2"),
        ("cp=usp", "cp.ulysses_degree=2", "cluster.nproc=4"),
    ]
    for args in runs:
        p = lcab_run(tmp, *args, *TINY, f"store={store}", f"hydra.sweep.dir={tmp / 'sweep'}", timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    got = rows(store)
    assert len(got) == 5 and {r["status"] for r in got} == {"ok"}, [(r["status"], r["reason"]) for r in got]
    return got


def test_plan_only_bytes_equal_the_bytes_gloo_counted(gloo_rows):
    for row in gloo_rows:
        m, cp = row["metrics"], row["config"]["cp"]
        deg = m["cp_degrees"]
        cand = Candidate(cp["name"], cp["shard"], deg["ulysses"], deg["ring"], deg["windows"])
        world = row["config"]["world"]
        plan = plan_cell(build_mask("causal", 256), cand, SMALL, world)
        want = plan.bytes_by_kind("fwd_bwd")
        for rank, counted in enumerate(m["rank_bytes_by_kind"]):
            assert counted == pytest.approx(want), (cp["name"], rank, counted, want)
        assert m["rank_bytes_sent"] == pytest.approx([plan.bytes_sent("fwd_bwd")] * world)


@pytest.mark.parametrize("mask", ["causal_document", "sliding_window_causal", "share_question"])
@pytest.mark.parametrize(
    "cand",
    [
        Candidate("ring", "zigzag"),
        Candidate("ring", "balanced"),
        Candidate("usp", "zigzag", ulysses=2),
        Candidate("double_ring", "contiguous", ulysses=1, windows=2),
        Candidate("ring_allgather", "zigzag"),
        Candidate("ulysses", "zigzag"),
    ],
    ids=lambda c: f"{c.strategy}-{c.shard}",
)
def test_plan_only_areas_equal_the_strategies_own_plans(mask, cand):
    """Every rank's per-step visible area, from interval sums, equals the tiles lcab.cp builds."""
    m = build_mask(mask, 1024)
    world = 4
    plan = plan_cell(m, cand, SMALL, world)
    strat = registry.get(cand.strategy)
    deg = strat.check(cand.cp(), SMALL, world)
    shard = strat.shard(cand.cp(), m, world)
    kernel = kernels.create("sdpa_math")
    for rank in range(world):
        topo = Topology(world, rank, deg, True)
        real = strat.plan(m, shard, topo, kernel, SMALL)
        member = rank if cand.strategy == "ring_allgather" else topo.ring_index
        assert plan.area[member] == pytest.approx([sum(t.area for t in s.tiles) for s in real.steps])
        assert plan.rank_area[rank] == pytest.approx(real.area)
    # Merge work: per step, the query rows of the chunks that see at least one key of the step's
    # block, read off the dense mask (the shard's chunks of the member's query and key groups).
    dense = m.dense().numpy()
    runs = [[(a, b) for a, b in shard.ranges[k] if b > a] for k in range(world)]
    for member in range(plan.members):
        topo = Topology(world, member, deg, True)
        mine = [member] if cand.strategy == "ring_allgather" else topo.at(0).uly_ranks(member)
        for step, src in enumerate(plan.order[member]):
            keys = range(world) if cand.strategy == "ring_allgather" else topo.at(0).uly_ranks(int(src))
            cols = np.zeros(dense.shape[1], dtype=bool)
            for k in keys:
                for a, b in runs[k]:
                    cols[a:b] = True
            want = sum(b - a for k in mine for a, b in runs[k] if dense[a:b][:, cols].any())
            assert plan.rows[member, step] == want, (member, step)


def test_a_1024_rank_plan_needs_no_tensors_and_covers_the_mask(monkeypatch):
    mask = build_mask("causal_document", 256 * 1024)

    def no_tensors(*a, **k):
        raise AssertionError("the plan-only path allocated a tensor")

    for fn in ("empty", "zeros", "tensor", "arange", "from_numpy"):
        monkeypatch.setattr(torch, fn, no_tensors)
    paper = shape_spec(1, 64, 8, 128, "bf16")
    for cand in (Candidate("ring", "zigzag"), Candidate("usp", "zigzag", ulysses=8)):
        plan = plan_cell(mask, cand, paper, 1024)
        # Every visible pair is computed once per Ulysses group of heads.
        assert plan.area.sum() == mask.area
        assert np.sum(plan.rank_area) == pytest.approx(mask.area)
        assert plan.area.shape == (1024 // plan.deg.ulysses, 1024 // plan.deg.ulysses)


def test_merge_work_follows_the_accumulators():
    """Ring, zigzag, world 2, causal: each member's first step (its diagonal, every row) is kept
    as it came; the second step is the last, merged straight into the first result over the rows
    it reaches (read both, write one, in the dtype); ring_allgather writes its disjoint calls once."""
    from lcab.predict.model import merge_bytes

    shape = shape_spec(1, 4, 2, 32, "bf16")
    m = build_mask("causal", 1024)
    plan = plan_cell(m, Candidate("ring", "zigzag"), shape, 2)
    fwd = merge_bytes(plan, "fwd")
    per_row = 4 * 32 * 3 * 2  # heads x head dim x (read, read, write) x bf16 bytes
    assert list(fwd[:, 0]) == [0, 0]
    # member 0 holds chunks 0 and 3: only chunk 3 (256 rows) sees member 1's chunks 1 and 2
    assert fwd[0, 1] == 256 * per_row and fwd[1, 1] == 512 * per_row
    ag = plan_cell(m, Candidate("ring_allgather", "zigzag"), shape, 2)
    assert list(merge_bytes(ag, "fwd")[:, 0]) == [512 * 4 * 32 * 2 * 2] * 2
