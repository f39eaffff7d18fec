"""Llama-3 style CP: all-gather K/V, each rank computes its query chunks against the whole
(gathered, globally ordered) K/V, backward reduce-scatters dK/dV.

With zigzag sharding and a kernel that takes only full/causal, a rank's two chunks become two
calls: chunk c against keys [0, end of c), exactly Llama-3's layout. dK/dV reduce in fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcab.cp.base import RingOnly, RunCtx, Strategy, Topology
from lcab.cp.emulation import RankBuffers, kv_block_bytes, take_rows, tiled_step
from lcab.cp.merge import LseAccumulator, acc_dtype
from lcab.cp.submask import Run
from lcab.cp.tiled_lse import Step, TiledPlan, backward_tiles, forward_tiles
from lcab.cp.tiles import StepCache, make_tiles
from lcab.harness.inputs import StepInputs
from lcab.kernels.base import ShapeSpec


def gather_index(shard, device) -> torch.Tensor:
    """Position in the all-gathered [W * L] buffer of each global token."""
    idx = torch.empty(shard.seqlen, dtype=torch.long)
    for r in range(shard.world):
        for run in shard.runs(r, offset=r * shard.local_len):
            idx[run.g0 : run.g1] = torch.arange(run.l0, run.l0 + run.n)
    return idx.to(device)


@dataclass(frozen=True, kw_only=True)
class AllGatherPlan(TiledPlan):
    gather_index: torch.Tensor  # see gather_index()


class AllGatherFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: AllGatherPlan, run: RunCtx):
        w, g = plan.topo.world, run.groups["ring"]
        kv = torch.stack([k, v])  # [2, B, L, H, D]
        buf = torch.empty((w * 2, *kv.shape[1:]), dtype=kv.dtype, device=kv.device)
        run.comm.all_gather(buf, kv, g, "allgather_kv")
        full = buf.view(w, *kv.shape).movedim(0, 2).reshape(2, kv.shape[1], -1, *kv.shape[3:])
        full = full.index_select(2, plan.gather_index)  # [2, B, S, H, D], global order
        acc = LseAccumulator(q)
        with run.timer:
            forward_tiles(q, full, plan.steps[0].tiles, acc)
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
            backward_tiles(dout.contiguous(), q, full, out, lse, plan.steps[0].tiles, dq, dfull)
        _, b, seq, h, d = ctx.kshape
        scat = dfull.new_zeros(2, b, w * seq, h, d).index_copy_(2, plan.gather_index, dfull)
        scat = scat.view(2, b, w, seq, h, d).movedim(2, 0).contiguous()
        mine = torch.empty((2, b, seq, h, d), dtype=adt, device=q.device)
        run.comm.reduce_scatter(mine.view(-1), scat.view(-1), run.groups["ring"], "reduce_scatter_dkv")
        return dq.to(q.dtype), mine[0].to(q.dtype), mine[1].to(q.dtype), None, None


class RingAllGather(RingOnly, Strategy):
    name = "ring_allgather"
    summary = "all-gather K/V (Llama-3), reduce-scatter dK/dV"

    def group_specs(self, topo: Topology) -> dict:
        return {"ring": [topo.ring_ranks(0)]}

    def plan(self, mask, shard, topo, kernel, shape: ShapeSpec) -> AllGatherPlan:
        cache = StepCache(kernel, shape)
        tiles = make_tiles(mask, shard.runs(topo.rank), [Run(0, mask.seqlen_k, 0)], cache)
        return AllGatherPlan(
            shard=shard,
            topo=topo,
            heads_q=shape.heads_q,
            heads_kv=shape.heads_kv,
            steps=(Step(None, tiles),),
            area=sum(t.area for t in tiles),
            notes={"step_forms": sorted(cache.forms)},
            gather_index=gather_index(shard, shape.device),
        )

    def attention(self, q, k, v, plan: AllGatherPlan, ctx: RunCtx) -> torch.Tensor:
        return AllGatherFn.apply(q, k, v, plan, ctx)

    def emulated_step(self, plan: AllGatherPlan, glob: StepInputs, mode: str) -> Callable[[], object]:
        q, k, v, dout = (t.detach() for t in (glob.q, glob.k, glob.v, glob.dout))
        idx = torch.from_numpy(plan.shard.index(plan.topo.rank)).to(q.device)
        kv = torch.stack([k, v])  # every rank's K/V, gathered: the whole sequence
        return tiled_step(plan, RankBuffers(take_rows(q, idx), take_rows(dout, idx), lambda m: kv), mode)

    def comm_bytes(self, plan: AllGatherPlan, shape: ShapeSpec, mode: str) -> float:
        """All-gather K/V forward, reduce-scatter dK/dV (fp32) backward."""
        r, el = plan.topo.deg.ring, shape.dtype.itemsize
        kv, _ = kv_block_bytes(plan, shape)
        acc = acc_dtype(shape.dtype).itemsize
        fwd, bwd = (r - 1) * kv, (r - 1) / r * r * kv * acc / el
        return {"fwd": fwd, "bwd": bwd, "fwd_bwd": fwd + bwd}[mode]
