"""Llama-3 style CP: all-gather K/V, each rank computes its query chunks against the whole
(gathered, globally ordered) K/V, backward reduce-scatters dK/dV.

With zigzag sharding and a kernel that takes only full/causal, a rank's two chunks become two
calls: chunk c against keys [0, end of c), exactly Llama-3's layout. dK/dV reduce in fp32.

The backward's calls are cut at each query run's diagonal (backward_tiles): keys before the run
(a dense block), keys beside it (a square top-left band, e.g. causal), keys after it. Uncut, a
zigzag rank's calls are bottom-right bands of different shapes per rank (rank 0: 8K x 8K and
8K x 32K at S = 32K, world 2; rank 1: one 16K x 24K): equal areas, but cuDNN's backward ran them
at 65 vs 45 ms on H200 (issue 16). Cut, every rank runs dense blocks and square causal blocks,
the shapes the single-GPU kernel is fastest on. The forward keeps the fewest calls (no merges);
the backward recomputes from the saved per-row LSE, so it may tile the mask differently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import pairwise

import torch

from lcab.cp.base import RingOnly, RunCtx, Strategy, Topology
from lcab.cp.emulation import RankBuffers, kv_block_bytes, take_rows, tiled_step
from lcab.cp.merge import LseAccumulator, RowSum, acc_dtype
from lcab.cp.submask import Run
from lcab.cp.tiled_lse import Step, TiledPlan, backward_tiles, forward_tiles
from lcab.cp.tiles import StepCache, Tile, make_tiles
from lcab.harness.inputs import StepInputs
from lcab.kernels.base import ShapeSpec, Unsupported
from lcab.masks.slices import AttnMask


def gather_index(shard, device) -> torch.Tensor:
    """Position in the all-gathered [W * L] buffer of each global token."""
    idx = torch.empty(shard.seqlen, dtype=torch.long)
    for r in range(shard.world):
        for run in shard.runs(r, offset=r * shard.local_len):
            idx[run.g0 : run.g1] = torch.arange(run.l0, run.l0 + run.n)
    return idx.to(device)


def dense(t: Tile) -> bool:
    return t.area == (t.q1 - t.q0) * (t.k1 - t.k0)


def gathered_tiles(mask: AttnMask, q_runs: list[Run], cache: StepCache, cut: bool) -> list[Tile]:
    """A rank's query runs against the whole gathered K/V: the fewest calls (cut=False), or each
    run cut at its diagonal into keys before / beside / after it (cut=True; left whole where the
    calls are dense already or a piece cannot be expressed)."""
    whole = make_tiles(mask, q_runs, [Run(0, mask.seqlen_k, 0)], cache)
    if not cut or all(dense(t) for t in whole):
        return whole
    tiles: list[Tile] = []
    try:
        for qr in q_runs:
            for a, b in pairwise(sorted({0, qr.g0, qr.g1, mask.seqlen_k})):
                tiles += make_tiles(mask, [qr], [Run(a, b, a)], cache)
    except Unsupported:
        return whole
    return tiles


@dataclass(frozen=True, kw_only=True)
class AllGatherPlan(TiledPlan):
    gather_index: torch.Tensor  # see gather_index()
    bwd_tiles: tuple[Tile, ...] = ()  # the backward's calls (gathered_tiles(cut=True))

    def for_backward(self) -> AllGatherPlan:
        """This plan with the backward's calls as its one step (what emulation times for bwd)."""
        return replace(self, steps=(Step(None, list(self.bwd_tiles)),))


class AllGatherFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: AllGatherPlan, run: RunCtx):
        w, g = plan.topo.world, run.groups["ring"]
        with run.timer.region("layout"):
            kv = torch.stack([k, v])  # [2, B, L, H, D]
            buf = torch.empty((w * 2, *kv.shape[1:]), dtype=kv.dtype, device=kv.device)
        with run.timer.region("comm"):
            run.comm.all_gather(buf, kv, g, "allgather_kv")
        with run.timer.region("layout"):
            full = buf.view(w, *kv.shape).movedim(0, 2).reshape(2, kv.shape[1], -1, *kv.shape[3:])
            full = full.index_select(2, plan.gather_index)  # [2, B, S, H, D], global order
            acc = LseAccumulator(q)
        with run.timer:
            forward_tiles(q, full, plan.steps[0].tiles, acc, plan.last[0])
        with run.timer.region("layout"):
            out, lse = acc.result(q.dtype)
        ctx.save_for_backward(q, full, out, lse)
        ctx.plan, ctx.run, ctx.kshape = plan, run, kv.shape
        return out

    @staticmethod
    def backward(ctx, dout):
        q, full, out, lse = ctx.saved_tensors
        plan, run = ctx.plan, ctx.run
        w = plan.topo.world
        adt = acc_dtype(q.dtype)
        with run.timer.region("layout"):
            dq = RowSum(q.shape, q.dtype, q.device)
            dfull = torch.zeros(full.shape, dtype=adt, device=q.device)
            dout = dout.contiguous()
        with run.timer:
            backward_tiles(dout, q, full, out, lse, list(plan.bwd_tiles), dq, dfull)
        _, b, seq, h, d = ctx.kshape
        with run.timer.region("layout"):
            scat = dfull.new_zeros(2, b, w * seq, h, d).index_copy_(2, plan.gather_index, dfull)
            scat = scat.view(2, b, w, seq, h, d).movedim(2, 0).contiguous()
            mine = torch.empty((2, b, seq, h, d), dtype=adt, device=q.device)
        with run.timer.region("comm"):
            run.comm.reduce_scatter(mine.view(-1), scat.view(-1), run.groups["ring"], "reduce_scatter_dkv")
        with run.timer.region("layout"):
            return dq.result(q.dtype), mine[0].to(q.dtype), mine[1].to(q.dtype), None, None


class RingAllGather(RingOnly, Strategy):
    name = "ring_allgather"
    summary = "all-gather K/V (Llama-3), reduce-scatter dK/dV"

    def group_specs(self, topo: Topology) -> dict:
        return {"ring": [topo.ring_ranks(0)]}

    def plan(self, mask, shard, topo, kernel, shape: ShapeSpec) -> AllGatherPlan:
        cache = StepCache(kernel, shape)
        runs = shard.runs(topo.rank)
        tiles = gathered_tiles(mask, runs, cache, cut=False)
        bwd = gathered_tiles(mask, runs, cache, cut=True)
        return AllGatherPlan(
            shard=shard,
            topo=topo,
            heads_q=shape.heads_q,
            heads_kv=shape.heads_kv,
            steps=(Step(None, tiles),),
            area=sum(t.area for t in tiles),
            notes={"step_forms": sorted(cache.forms), "calls_fwd": len(tiles), "calls_bwd": len(bwd)},
            gather_index=gather_index(shard, shape.device),
            bwd_tiles=tuple(bwd),
        )

    def attention(self, q, k, v, plan: AllGatherPlan, ctx: RunCtx) -> torch.Tensor:
        return AllGatherFn.apply(q, k, v, plan, ctx)

    def emulated_step(self, plan: AllGatherPlan, glob: StepInputs, mode: str) -> Callable[[], object]:
        q, k, v, dout = (t.detach() for t in (glob.q, glob.k, glob.v, glob.dout))
        idx = torch.from_numpy(plan.shard.index(plan.topo.rank)).to(q.device)
        kv = torch.stack([k, v])  # every rank's K/V, gathered: the whole sequence
        bufs = RankBuffers(take_rows(q, idx), take_rows(dout, idx), lambda m: kv)
        if mode == "fwd":
            return tiled_step(plan, bufs, mode)
        bwd = tiled_step(plan.for_backward(), bufs, "bwd")
        if mode == "bwd":
            return bwd
        fwd = tiled_step(plan, bufs, "fwd")
        return lambda: (fwd(), bwd())

    def comm_bytes(self, plan: AllGatherPlan, shape: ShapeSpec, mode: str) -> float:
        """All-gather K/V forward, reduce-scatter dK/dV (fp32) backward."""
        r, el = plan.topo.deg.ring, shape.dtype.itemsize
        kv, _ = kv_block_bytes(plan, shape)
        acc = acc_dtype(shape.dtype).itemsize
        fwd, bwd = (r - 1) * kv, (r - 1) / r * r * kv * acc / el
        return {"fwd": fwd, "bwd": bwd, "fwd_bwd": fwd + bwd}[mode]
