"""Llama-3 style CP: all-gather K/V, each rank computes its query chunks against the whole
(gathered, globally ordered) K/V, backward reduce-scatters dK/dV.

With zigzag sharding and a kernel that takes only full/causal, a rank's two chunks become two
calls: chunk c against keys [0, end of c), exactly Llama-3's layout. dK/dV reduce in fp32.
"""

from __future__ import annotations

import torch

from lcab.cp.base import (
    Degrees,
    RankPlan,
    RunCtx,
    StepCache,
    Strategy,
    Topology,
    degree,
    make_tiles,
    register,
)
from lcab.cp.merge import LseAccumulator, acc_dtype
from lcab.cp.ring import _backward_tiles, _forward_tiles
from lcab.cp.submask import Run
from lcab.kernels.base import ShapeSpec


def gather_index(shard, device) -> torch.Tensor:
    """Position in the all-gathered [W * L] buffer of each global token."""
    idx = torch.empty(shard.seqlen, dtype=torch.long)
    for r in range(shard.world):
        for run in shard.runs(r, offset=r * shard.local_len):
            idx[run.g0 : run.g1] = torch.arange(run.l0, run.l0 + run.n)
    return idx.to(device)


class AllGatherFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: RankPlan, run: RunCtx):
        w, g = plan.topo.world, plan.topo.groups["ring"]
        idx = plan.extra["gidx"]
        kv = torch.stack([k, v])  # [2, B, L, H, D]
        buf = torch.empty((w * 2, *kv.shape[1:]), dtype=kv.dtype, device=kv.device)
        run.comm.all_gather(buf, kv, g, "allgather_kv")
        full = buf.view(w, *kv.shape).movedim(0, 2).reshape(2, kv.shape[1], -1, *kv.shape[3:])
        full = full.index_select(2, idx)  # [2, B, S, H, D], global order
        acc = LseAccumulator(q)
        with run.timer:
            _forward_tiles(q, full, plan.steps[0][1], acc)
        out = acc.out.to(q.dtype)
        ctx.save_for_backward(q, full, out, acc.lse)
        ctx.plan, ctx.run, ctx.kshape = plan, run, kv.shape
        return out

    @staticmethod
    def backward(ctx, dout):
        q, full, out, lse = ctx.saved_tensors
        plan, run = ctx.plan, ctx.run
        w = plan.topo.world
        adt = acc_dtype(q.dtype)
        dq = torch.zeros(q.shape, dtype=adt, device=q.device)
        dfull = torch.zeros(full.shape, dtype=adt, device=q.device)
        with run.timer:
            _backward_tiles(dout.contiguous(), q, full, out, lse, plan.steps[0][1], dq, dfull)
        _, b, seq, h, d = ctx.kshape
        scat = dfull.new_zeros(2, b, w * seq, h, d).index_copy_(2, plan.extra["gidx"], dfull)
        scat = scat.view(2, b, w, seq, h, d).movedim(2, 0).contiguous()
        mine = torch.empty((2, b, seq, h, d), dtype=adt, device=q.device)
        run.comm.reduce_scatter(mine.view(-1), scat.view(-1), plan.topo.groups["ring"], "reduce_scatter_dkv")
        return dq.to(q.dtype), mine[0].to(q.dtype), mine[1].to(q.dtype), None, None


@register
class RingAllGather(Strategy):
    name = "ring_allgather"
    summary = "all-gather K/V (Llama-3), reduce-scatter dK/dV"

    def degrees(self, cp: dict, world: int) -> Degrees:
        return Degrees(ulysses=1, ring=degree(cp.get("ring_degree", 0), world))

    def group_specs(self, topo: Topology) -> dict:
        return {"ring": [topo.ring_ranks(0)]}

    def plan(self, mask, shard, topo, kernel, shape: ShapeSpec) -> RankPlan:
        cache = StepCache(kernel, shape)
        tiles = make_tiles(mask, shard.runs(topo.rank), [Run(0, mask.seqlen_k, 0)], cache)
        plan = RankPlan(shard, topo, shape.heads_q, shape.heads_kv, steps=[(None, tiles)])
        plan.area = sum(t.area for t in tiles)
        plan.notes["step_forms"] = sorted(cache.forms)
        plan.extra["gidx"] = gather_index(shard, shape.device)
        return plan

    def attention(self, q, k, v, plan: RankPlan, ctx: RunCtx) -> torch.Tensor:
        return AllGatherFn.apply(q, k, v, plan, ctx)
