"""Issue 16's CP fixes, without processes: ring_allgather's backward calls (defect 2) and
Ulysses' sequence <-> head exchange (defect 3)."""

from __future__ import annotations

import pytest
import torch

from lcab.config import mask_config
from lcab.cp import registry as strategies
from lcab.cp.base import Degrees, Topology
from lcab.cp.sharding import make_shard
from lcab.cp.submask import Run, submask
from lcab.kernels import create
from lcab.kernels.base import ShapeSpec, Unsupported
from lcab.kernels.varlen_args import cudnn_step_layout
from lcab.masks import build

CPU = torch.device("cpu")


def _plans(cp: str, mask_name: str, s: int, world: int, shard: str = "zigzag", kernel: str = "torch"):
    mask = build(mask_config(dict(name=mask_name)), s)
    strat = strategies.get(cp)
    sh = make_shard(shard, mask, world)
    shape = ShapeSpec(1, 4, 2, 8, torch.float32, CPU)
    deg = Degrees(ulysses=1, ring=world)
    return (
        mask,
        sh,
        [strat.plan(mask, sh, Topology(world, r, deg), create(kernel), shape) for r in range(world)],
    )


def _layout(mask, t):
    """The cuDNN layout of one call's sub-mask (kernel-free: what kernel=cudnn would run)."""
    return cudnn_step_layout(submask(mask, [Run(t.q0, t.q1, t.q0)], [Run(t.k0, t.k1, t.k0)]).mask)


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("shard", ["zigzag", "balanced", "contiguous"])
def test_allgather_backward_calls_are_dense_or_square_bands(world, shard):
    """Defect 2: the backward's calls are dense blocks or square top-left bands on every rank (no
    bottom-right band over q != k, the shape cuDNN's backward ran 1.45x slower on one rank), they
    cover exactly the rank's area, and the forward keeps its calls."""
    s = 256
    mask, sh, plans = _plans("ring_allgather", "causal", s, world, shard)
    for r, p in enumerate(plans):
        bwd = list(p.bwd_tiles)
        assert sum(t.area for t in bwd) == sh.row_area(mask, r) == p.area
        for t in bwd:
            lay = _layout(mask, _global(t, sh, r))
            dense = t.area == (t.q1 - t.q0) * (t.k1 - t.k0)
            assert dense or (t.q1 - t.q0 == t.k1 - t.k0 and not lay.bottom_right), (r, t, lay)
        assert len(p.steps[0].tiles) == 1  # kernel=torch takes each rank's sub-mask in one call


def _global(t, sh, rank):
    """A tile's rows in global positions (the rank's runs are contiguous pieces of its buffer)."""
    for run in sh.runs(rank):
        if run.l0 <= t.q0 < run.l0 + run.n:
            off = run.g0 - run.l0
            return type(t)(t.q0 + off, t.q1 + off, t.k0, t.k1, t.fns, t.area)
    raise AssertionError(t)


def test_allgather_zigzag_uncut_calls_were_uneven_bands():
    """What the cut replaces (the cuDNN layouts of today's forward calls, S = 32K, world 2):
    rank 0 a square causal and an 8K x 32K bottom-right band, rank 1 one 16K x 24K bottom-right band."""
    s = 32768
    mask = build(mask_config(dict(name="causal")), s)
    sh = make_shard("zigzag", mask, 2)
    got = []
    for r in range(2):
        runs = sh.runs(r)
        try:
            got.append([cudnn_step_layout(submask(mask, runs, [Run(0, s, 0)]).mask).describe()])
        except Unsupported:
            got.append([cudnn_step_layout(submask(mask, [q], [Run(0, s, 0)]).mask).describe() for q in runs])
    assert got == [["bshd+causal", "bshd+causal_bottom_right"], ["bshd+causal_bottom_right"]]


def test_allgather_full_mask_is_not_cut():
    _, _, plans = _plans("ring_allgather", "full", 128, 2)
    for p in plans:
        assert len(p.bwd_tiles) == 1 == len(p.steps[0].tiles)


# --- Ulysses (defect 3): run in gloo ranks (the pools fixture) ---------------------------------

COPY_OPS = (
    "copy_",
    "clone",
    "index_select",
    "index_copy",
    "zeros",
    "new_zeros",
    "fill_",
    "stack",
    "cat",
    "_to_copy",
)


def _ulysses_layout_ops(mask_name: str, shard: str, s: int, cp_opts: dict) -> dict:
    """One Ulysses fwd and bwd on this rank with a real plan and gloo groups: the aten ops that move
    memory outside the kernel calls (counted by a dispatch mode that the compute region pauses),
    the collectives, and the exchange checked bit for bit against the global tensors."""
    import torch.distributed as dist
    from torch.utils._python_dispatch import TorchDispatchMode

    from lcab.cp.heads import head_to_seq, members, seq_to_head
    from lcab.cp.selfcheck import case_config
    from lcab.cp.tokens import local_inputs
    from lcab.harness.inputs import make_inputs
    from lcab.pipeline.prepare import open_cell, prepare
    from lcab.plan import Cell

    rank, world = dist.get_rank(), dist.get_world_size()
    c = case_config(
        "ulysses", mask=mask_name, seqlen=s, shard=shard, world=world, heads=(8, 4), dtype="fp32", **cp_opts
    )
    dev = torch.device("cpu")
    prep = prepare(Cell(c, "u"), dev, rank, world)
    run = open_cell(prep, c["cp"], dev)
    sp = prep.shape
    glob = make_inputs(sp.batch, s, s, sp.heads_q, sp.heads_kv, sp.head_dim, sp.dtype, dev, 0)
    mine = local_inputs(glob, prep.shard, rank)

    counts: dict[str, int] = {}
    moved = [0]

    class Count(TorchDispatchMode):
        paused = False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if not Count.paused and name in COPY_OPS:
                counts[name] = counts.get(name, 0) + 1
                res = func(*args, **(kwargs or {}))
                moved[0] += res.numel() * res.element_size()  # bytes written by the copy
                return res
            return func(*args, **(kwargs or {}))

    timer = run.timer
    enter, leave = type(timer).__enter__, type(timer).__exit__

    class Paused(type(timer)):
        def __enter__(self):
            Count.paused = True
            return enter(self)

        def __exit__(self, *exc):
            Count.paused = False
            return leave(self, *exc)

    timer.__class__ = Paused  # the same timer object; its compute region pauses the count
    q, k, v = (t.detach().clone().requires_grad_() for t in mine.qkv)
    with Count():
        out = prep.strategy.attention(q, k, v, prep.plan, run)
        fwd, fwd_bytes = dict(counts), moved[0]
        counts.clear()
        moved[0] = 0
        torch.autograd.grad(out, (q, k, v), mine.dout)
    bwd, bwd_bytes = dict(counts), moved[0]

    # The exchange alone, against the global tensor: rank m gets the group's tokens (rank 0's,
    # then rank 1's, in shard order) and heads [m*h, (m+1)*h); head_to_seq gives x back exactly.
    h = sp.heads_q // world
    x = mine.q.detach()
    m, ex, g = members(prep.topo), prep.topo.deg.exchange, run.groups.get("uly")
    y = seq_to_head(x, m, ex, run, g, "t")
    idx = torch.cat([torch.from_numpy(prep.shard.index(r)) for r in range(world)])
    ref = glob.q.detach().index_select(1, idx.clamp(min=0))[:, :, rank * h : (rank + 1) * h]
    ref = ref.masked_fill((idx < 0)[None, :, None, None], 0)
    back = head_to_seq(y, m, ex, run, g, "t")
    return {
        "fwd": fwd,
        "bwd": bwd,
        "fwd_bytes": fwd_bytes,
        "bwd_bytes": bwd_bytes,
        "local_bytes": {n: t.numel() * t.element_size() for n, t in zip("qkv", mine.qkv, strict=True)},
        "calls": dict(run.comm.stats.calls),
        "exchange_exact": bool(torch.equal(y, ref)),
        "inverse_exact": bool(torch.equal(back, x)),
        "single_call": prep.plan.pipe.attn.single,
        "perm": prep.plan.pipe.order.perm is not None,
        "chunks": prep.plan.pipe.chunks,
    }


@pytest.mark.parametrize("exchange", ["all_to_all", "pairwise"])
@pytest.mark.parametrize("chunks", [1, 2])
def test_ulysses_layout_work_per_call(pools, exchange, chunks):
    """Defect 3: outside the kernel calls a Ulysses call writes each of q, k, v once before its
    exchange and the output once after it (at batch 1 nothing else, whatever the exchange and
    head chunk count), and a causal mask adds one gather per tensor each way; no fp32
    accumulator, zero-fill, cast or K/V stack. The eager kernel used here returns a
    [B, H, S, D]-strided output: all_to_all copies all of it into its send buffer, pairwise only
    the other member's half (its own half is landed from where it is)."""
    opts = {"exchange": exchange, "head_chunks": chunks}
    r = pools(2).run(_ulysses_layout_ops, "full", "zigzag", 128, opts)  # rank 0's answer
    n = r["chunks"]
    assert n == chunks
    exchanges = {f"a2a_{t}{d}": n for t in ("q", "k", "v", "out") for d in ("", "_bwd")}
    assert r["exchange_exact"] and r["inverse_exact"]
    assert r["single_call"] and not r["perm"]
    assert r["calls"] == {**exchanges, "t": 2}
    q, k, v = (r["local_bytes"][t] for t in "qkv")
    strided = q if exchange == "all_to_all" else q // 2
    assert r["fwd_bytes"] == q + k + v + q + strided, r
    assert set(r["fwd"]) <= {"clone", "copy_"}, r
    r = pools(2).run(_ulysses_layout_ops, "causal", "zigzag", 128, opts)
    assert r["exchange_exact"] and r["inverse_exact"] and r["single_call"] and r["perm"]
    assert r["fwd_bytes"] == 2 * (q + k + v + q), r  # gathers made every tensor contiguous
    assert r["fwd"]["index_select"] == 4 * n and set(r["fwd"]) <= {"clone", "copy_", "index_select"}, r
    assert r["bwd"]["index_select"] == 4 * n and set(r["bwd"]) <= {"clone", "copy_", "index_select"}, r
