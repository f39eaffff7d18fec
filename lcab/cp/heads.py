"""Ulysses head sharding (DeepSpeed): all-to-all from sequence-sharded [B, L, H, D] to
head-sharded [B, U*L, H/U, D] and back, as autograd functions; the shape and token runs a rank
holds after it. Used by ulysses and by every strategy with a Ulysses degree (usp, double_ring).
"""

from __future__ import annotations

import torch

from lcab.cp.base import Degrees, RankPlan, RunCtx, Topology
from lcab.cp.sharding import Shard
from lcab.cp.submask import Run
from lcab.kernels.base import ShapeSpec


def _a2a(x: torch.Tensor, run: RunCtx, group, kind: str) -> torch.Tensor:
    """One all_to_all_single of x's leading chunks; the copy that makes x contiguous (the layout
    work around the exchange) and the collective are timed as separate regions."""
    with run.timer.region("layout"):
        x = x.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    with run.timer.region("comm"):
        run.comm.all_to_all(out, x, group, kind)
    return out


def _merge(t: torch.Tensor, shape: tuple[int, ...], run: RunCtx) -> torch.Tensor:
    """t.reshape(shape): a view where the layout allows it (batch 1), else a copy timed as layout."""
    with run.timer.region("layout"):
        return t.reshape(shape)


def seq_to_head(x: torch.Tensor, group, u: int, run: RunCtx, kind: str) -> torch.Tensor:
    """[B, L, H, D] (my tokens, all heads) -> [B, U*L, H/U, D] (the group's tokens, my heads).
    The send buffer [U, B, L, H/U, D] is one copy; at batch 1 the received [src, 1, L, H/U, D]
    is already [1, U*L, H/U, D], so nothing is copied after the exchange."""
    b, seq, h, d = x.shape
    inp = x.reshape(b, seq, u, h // u, d).permute(2, 0, 1, 3, 4)
    out = _a2a(inp, run, group, kind)  # [src, B, L, h, D]
    return _merge(out.permute(1, 0, 2, 3, 4), (b, u * seq, h // u, d), run)


def head_to_seq(y: torch.Tensor, group, u: int, run: RunCtx, kind: str) -> torch.Tensor:
    """Inverse of seq_to_head: at batch 1 the send buffer is y itself (no copy); the received
    [src, B, L, h, D] is copied once into [B, L, U*h, D]."""
    b, useq, h, d = y.shape
    seq = useq // u
    inp = y.reshape(b, u, seq, h, d).permute(1, 0, 2, 3, 4)
    out = _a2a(inp, run, group, kind)  # [src, B, L, h, D]: my tokens, src's heads
    return _merge(out.permute(1, 2, 0, 3, 4), (b, seq, u * h, d), run)


class SeqToHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, u, run, kind):
        ctx.args = (group, u, run, kind)
        return seq_to_head(x, group, u, run, kind)

    @staticmethod
    def backward(ctx, g):
        group, u, run, kind = ctx.args
        return head_to_seq(g, group, u, run, kind + "_bwd"), None, None, None, None


class HeadToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, group, u, run, kind):
        ctx.args = (group, u, run, kind)
        return head_to_seq(y, group, u, run, kind)

    @staticmethod
    def backward(ctx, g):
        group, u, run, kind = ctx.args
        return seq_to_head(g, group, u, run, kind + "_bwd"), None, None, None, None


def group_concat_runs(shard: Shard, topo: Topology, ring_index: int) -> list[Run]:
    """Tokens of one Ulysses group after its all-to-all: each member's runs at offset j*L."""
    runs: list[Run] = []
    for j, r in enumerate(topo.uly_ranks(ring_index)):
        runs += shard.runs(r, offset=j * shard.local_len)
    return runs


def group_token_index(shard: Shard, topo: Topology, ring_index: int) -> torch.Tensor:
    """Global token per position of one Ulysses group's all-to-all buffer (-1 = padding)."""
    return torch.cat([torch.from_numpy(shard.index(r)) for r in topo.uly_ranks(ring_index)])


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
    g, u = ctx.groups.get("uly"), deg.ulysses
    return tuple(SeqToHead.apply(t, g, u, ctx, "a2a_" + n) for t, n in ((q, "q"), (k, "k"), (v, "v")))


def to_seq(out: torch.Tensor, plan: RankPlan, ctx: RunCtx) -> torch.Tensor:
    """The attention output back to sequence sharding (all heads of my tokens)."""
    return HeadToSeq.apply(out, ctx.groups.get("uly"), plan.topo.deg.ulysses, ctx, "a2a_out")
