"""Ulysses head sharding (DeepSpeed): from sequence-sharded [B, L, H, D] to head-sharded
[B, U*L, H/U, D] and back, as autograd functions over cp.exchange (lcab.cp.head_exchange); the
shape and token runs a rank holds after it. Used by every strategy with a Ulysses degree (usp,
double_ring; ulysses' whole-kernel path); ulysses' step path pipelines the same exchange
(lcab.cp.head_pipeline).
"""

from __future__ import annotations

import torch

from lcab.cp.base import Degrees, RankPlan, RunCtx, Topology
from lcab.cp.head_exchange import EXCHANGE, Members, land
from lcab.cp.sharding import Shard
from lcab.cp.submask import Run
from lcab.kernels.base import ShapeSpec


def members(topo: Topology) -> Members:
    """This rank's Ulysses group (the exchange's peers)."""
    return Members(tuple(topo.uly_ranks()), topo.uly_index)


def seq_to_head(x: torch.Tensor, m: Members, exchange: str, run: RunCtx, group, kind: str) -> torch.Tensor:
    """[B, L, H, D] (my tokens, all heads) -> [B, U*L, H/U, D] (the group's tokens, my heads),
    through cp.exchange (lcab.cp.head_exchange) as one chunk, waited on at once."""
    return EXCHANGE[exchange].to_heads((x,), (kind,), m, 1, 0, run, group).wait()[0]


def head_to_seq(y: torch.Tensor, m: Members, exchange: str, run: RunCtx, group, kind: str) -> torch.Tensor:
    """Inverse of seq_to_head: each member's tokens back, landed into [B, L, U*h, D]."""
    (parts,) = EXCHANGE[exchange].to_seq((y,), (kind,), m, run, group).wait()
    b, useq, h, d = y.shape
    out = torch.empty(b, useq // m.u, m.u * h, d, dtype=y.dtype, device=y.device)
    with run.timer.region("layout"):
        land(out, parts, 1, 0)
    return out


class SeqToHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, m, exchange, run, group, kind):
        ctx.args = (m, exchange, run, group, kind)
        return seq_to_head(x, m, exchange, run, group, kind)

    @staticmethod
    def backward(ctx, g):
        m, exchange, run, group, kind = ctx.args
        return head_to_seq(g, m, exchange, run, group, kind + "_bwd"), None, None, None, None, None


class HeadToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, m, exchange, run, group, kind):
        ctx.args = (m, exchange, run, group, kind)
        return head_to_seq(y, m, exchange, run, group, kind)

    @staticmethod
    def backward(ctx, g):
        m, exchange, run, group, kind = ctx.args
        return seq_to_head(g, m, exchange, run, group, kind + "_bwd"), None, None, None, None, None


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


def replicate_kv(k: torch.Tensor, v: torch.Tensor, deg: Degrees) -> tuple[torch.Tensor, torch.Tensor]:
    """KV heads repeated up to the Ulysses degree where there are fewer (check_heads)."""
    if deg.kv_replicas == 1:
        return k, v
    return k.repeat_interleave(deg.kv_replicas, 2), v.repeat_interleave(deg.kv_replicas, 2)


def to_heads(q, k, v, plan: RankPlan, ctx: RunCtx):
    """Replicate KV heads if needed, then exchange q, k, v to head sharding."""
    topo = plan.topo
    k, v = replicate_kv(k, v, topo.deg)
    m, g = members(topo), ctx.groups.get("uly")
    ex = topo.deg.exchange
    return tuple(SeqToHead.apply(t, m, ex, ctx, g, "a2a_" + n) for t, n in ((q, "q"), (k, "k"), (v, "v")))


def to_seq(out: torch.Tensor, plan: RankPlan, ctx: RunCtx) -> torch.Tensor:
    """The attention output back to sequence sharding (all heads of my tokens)."""
    topo = plan.topo
    return HeadToSeq.apply(out, members(topo), topo.deg.exchange, ctx, ctx.groups.get("uly"), "a2a_out")
