"""Ulysses (DeepSpeed): all-to-all q, k, v from sequence-sharded to head-sharded, attention over
the whole sequence with the FULL global mask on H/U heads, all-to-all back.

After the all-to-all the tokens sit in shard order (each rank's runs back to back); they are
put into global order so the kernel sees the original mask (causal stays is_causal).
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
from lcab.cp.comm import Comm
from lcab.cp.sharding import Shard
from lcab.cp.submask import Run
from lcab.kernels.base import Kernel, ShapeSpec, Unsupported
from lcab.masks.slices import AttnMask


def _a2a(x: torch.Tensor, group, comm: Comm, kind: str) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    comm.all_to_all(out, x, group, kind)
    return out


def seq_to_head(x: torch.Tensor, group, u: int, comm: Comm, kind: str) -> torch.Tensor:
    """[B, L, H, D] (my tokens, all heads) -> [B, U*L, H/U, D] (the group's tokens, my heads)."""
    b, seq, h, d = x.shape
    inp = x.reshape(b, seq, u, h // u, d).permute(2, 0, 1, 3, 4)
    out = _a2a(inp, group, comm, kind)  # [src, B, L, h, D]
    return out.permute(1, 0, 2, 3, 4).reshape(b, u * seq, h // u, d)


def head_to_seq(y: torch.Tensor, group, u: int, comm: Comm, kind: str) -> torch.Tensor:
    """Inverse of seq_to_head."""
    b, useq, h, d = y.shape
    seq = useq // u
    inp = y.reshape(b, u, seq, h, d).permute(1, 0, 2, 3, 4)
    out = _a2a(inp, group, comm, kind)  # [src, B, L, h, D]: my tokens, src's heads
    return out.permute(1, 2, 0, 3, 4).reshape(b, seq, u * h, d)


class SeqToHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, u, comm, kind):
        ctx.args = (group, u, comm, kind)
        return seq_to_head(x, group, u, comm, kind)

    @staticmethod
    def backward(ctx, g):
        group, u, comm, kind = ctx.args
        return head_to_seq(g, group, u, comm, kind + "_bwd"), None, None, None, None


class HeadToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, group, u, comm, kind):
        ctx.args = (group, u, comm, kind)
        return head_to_seq(y, group, u, comm, kind)

    @staticmethod
    def backward(ctx, g):
        group, u, comm, kind = ctx.args
        return seq_to_head(g, group, u, comm, kind + "_bwd"), None, None, None, None


def group_concat_runs(shard: Shard, topo: Topology, ring_index: int) -> list[Run]:
    """Tokens of one Ulysses group after its all-to-all: each member's runs at offset j*L."""
    runs: list[Run] = []
    for j, r in enumerate(topo.uly_ranks(ring_index)):
        runs += shard.runs(r, offset=j * shard.local_len)
    return runs


def local_shape(shape: ShapeSpec, deg: Degrees) -> ShapeSpec:
    return ShapeSpec(
        shape.batch,
        shape.heads_q // deg.ulysses,
        shape.heads_kv * deg.kv_replicas // deg.ulysses,
        shape.head_dim,
        shape.dtype,
        shape.device,
    )


def to_heads(q, k, v, plan: RankPlan, ctx: RunCtx):
    """Replicate KV heads if needed, then all-to-all q, k, v to head sharding."""
    deg = plan.topo.deg
    if deg.kv_replicas > 1:
        k = k.repeat_interleave(deg.kv_replicas, 2)
        v = v.repeat_interleave(deg.kv_replicas, 2)
    g, u = plan.topo.groups.get("uly"), deg.ulysses
    return tuple(SeqToHead.apply(t, g, u, ctx.comm, "a2a_" + n) for t, n in ((q, "q"), (k, "k"), (v, "v")))


@register
class Ulysses(Strategy):
    name = "ulysses"
    summary = "all-to-all to head sharding, full mask per head group, all-to-all back"

    def degrees(self, cp: dict, world: int) -> Degrees:
        return Degrees(ulysses=degree(cp.get("ulysses_degree", 0), world), ring=1)

    def group_specs(self, topo: Topology) -> dict:
        return {"uly": [topo.uly_ranks(i) for i in range(topo.deg.ring)]}

    def plan(
        self, mask: AttnMask, shard: Shard, topo: Topology, kernel: Kernel, shape: ShapeSpec
    ) -> RankPlan:
        ls = local_shape(shape, topo.deg)
        runs = group_concat_runs(shard, topo, 0)
        perm = torch.cat([torch.arange(r.l0, r.l0 + r.n) for r in runs])
        order = torch.cat([torch.arange(r.g0, r.g1) for r in runs])
        # perm_g[g] = position of global token g in the all-to-all buffer.
        perm_g = torch.empty_like(perm)
        perm_g[order] = perm
        identity = bool(torch.equal(perm_g, torch.arange(shard.local_len * topo.deg.ulysses)))
        plan = RankPlan(shard, topo, ls.heads_q, ls.heads_kv, area=mask.area / topo.deg.ulysses)
        plan.extra["perm"] = None if identity else perm_g.to(shape.device)
        whole = [Run(0, mask.seqlen_q, 0)]
        try:
            cache = StepCache(kernel, ls)
            plan.steps = [(0, make_tiles(mask, whole, whole, cache))]
            plan.notes["step_forms"] = sorted(cache.forms)
        except Unsupported:
            # Ulysses needs no LSE: any kernel runs through its own autograd.
            plan.extra["fn"] = kernel.prepare(mask, ls)
            plan.notes["ulysses_kernel_path"] = "prepare (compute time covers the forward only)"
        return plan

    def attention(self, q, k, v, plan: RankPlan, ctx: RunCtx) -> torch.Tensor:
        from lcab.cp.ring import RingFn

        qh, kh, vh = to_heads(q, k, v, plan, ctx)
        perm = plan.extra["perm"]
        if perm is not None:
            qh, kh, vh = (t.index_select(1, perm) for t in (qh, kh, vh))
        if "fn" in plan.extra:
            with ctx.timer:
                out, _ = plan.extra["fn"](qh, kh, vh)
        else:
            out = RingFn.apply(qh, kh, vh, plan, ctx)
        if perm is not None:
            out = out.new_zeros(
                qh.shape[0], plan.shard.local_len * plan.topo.deg.ulysses, *out.shape[2:]
            ).index_copy(1, perm, out)
        return HeadToSeq.apply(out, plan.topo.groups.get("uly"), plan.topo.deg.ulysses, ctx.comm, "a2a_out")
