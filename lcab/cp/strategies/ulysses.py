"""Ulysses (DeepSpeed): all-to-all q, k, v from sequence-sharded to head-sharded, attention over
the whole sequence with the FULL global mask on H/U heads, all-to-all back.

After the all-to-all the tokens sit in shard order (each rank's runs back to back); they are
put into global order so the kernel sees the original mask (causal stays is_causal), except
under a full mask without padding, which no token order changes.

The exchange is cp.exchange (lcab.cp.head_exchange: NCCL all_to_all_single or p2p pairs) and can
be pipelined over head chunks (cp.head_chunks, lcab.cp.head_pipeline: chunk c+1's q, k, v travel
while chunk c computes); on two H200s chunking measured slower, so the default is one chunk.
Copies are timed as the region "layout", the compute stream's waits on the exchange as "comm". A
kernel without step functions runs whole through its own autograd, unchunked (its compute time
covers the forward only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch

from lcab.config import CPConfig, UlyssesCPConfig
from lcab.cp.base import Degrees, RunCtx, Strategy, Topology, degree
from lcab.cp.emulation import RankBuffers, mesh_bytes, rank_heads, tiled_step
from lcab.cp.head_exchange import check_exchange
from lcab.cp.head_pipeline import ChunkAttention, Pipeline, PipelinedUlysses, TokenOrder, resolve_chunks
from lcab.cp.heads import (
    group_concat_runs,
    group_token_index,
    local_shape,
    members,
    replicate_kv,
    to_heads,
    to_seq,
)
from lcab.cp.sharding import Shard
from lcab.cp.submask import Run
from lcab.cp.tiled_lse import Step, TiledPlan
from lcab.cp.tiles import StepCache, make_tiles
from lcab.harness.inputs import StepInputs
from lcab.kernels.base import Kernel, ShapeSpec, Unsupported
from lcab.masks.forms import is_full
from lcab.masks.slices import AttnMask


@dataclass(frozen=True, kw_only=True)
class UlyssesPlan(TiledPlan):
    """steps: one step over the whole buffer, its calls built for one head chunk."""

    pipe: Pipeline | None = None  # the pipelined exchange (kernels with step functions)
    # A kernel without step functions runs whole through its own autograd (Ulysses needs no LSE).
    whole_fn: Callable | None = None
    order: TokenOrder = field(default_factory=TokenOrder)  # exchange buffer <-> global order
    no_steps: str = ""  # why there are no per-step calls (emulation times those)


def token_order(mask: AttnMask, shard: Shard, topo: Topology, ring_index: int):
    """(perm, unperm) between a Ulysses group's all-to-all buffer and global order: perm[g] =
    buffer position of global token g, unperm[p] = global token at position p; (None, None)
    when the orders agree (or a full mask without padding makes order irrelevant); unperm None
    when the buffer has padding."""
    runs = group_concat_runs(shard, topo, ring_index)
    perm = torch.cat([torch.arange(r.l0, r.l0 + r.n) for r in runs])
    order = torch.cat([torch.arange(r.g0, r.g1) for r in runs])
    perm_g = torch.empty_like(perm)
    perm_g[order] = perm
    order_buf = group_token_index(shard, topo, ring_index)  # -1 = padding
    padded = bool((order_buf < 0).any())
    identity = bool(torch.equal(perm_g, torch.arange(shard.local_len * topo.deg.ulysses)))
    if identity or (is_full(mask) and not padded):
        return None, None
    return perm_g, None if padded else order_buf


def ulysses_plan(
    mask: AttnMask, shard: Shard, topo: Topology, kernel: Kernel, shape: ShapeSpec
) -> UlyssesPlan:
    """The pipelined plan of a pure Ulysses group (ulysses, and usp with ring degree 1)."""
    ls = local_shape(shape, topo.deg)
    n = topo.deg.head_chunks
    chunk = replace(ls, heads_q=ls.heads_q // n, heads_kv=ls.heads_kv // n)
    perm, unperm = token_order(mask, shard, topo, topo.ring_index)
    order = TokenOrder(*(None if t is None else t.to(shape.device) for t in (perm, unperm)))
    common = dict(
        shard=shard, topo=topo, heads_q=ls.heads_q, heads_kv=ls.heads_kv, area=mask.area / topo.deg.ulysses
    )
    steps, notes = (), {"head_chunks": n}
    if kernel.has_steps(ls.device.type):  # its capabilities say per-step calls exist
        cache = StepCache(kernel, chunk)
        try:
            steps = (
                Step(0, make_tiles(mask, [Run(0, mask.seqlen_q, 0)], [Run(0, mask.seqlen_k, 0)], cache)),
            )
            notes["step_forms"] = sorted(cache.forms)
        except Unsupported:  # no step form for this mask: the kernel runs it whole
            steps = ()
    if not steps:
        notes["ulysses_kernel_path"] = "prepare (compute time covers the forward only)"
        return UlyssesPlan(
            **common,
            notes=notes,
            whole_fn=kernel.prepare(mask, ls),
            order=order,
            no_steps=f"{kernel.name} has no step functions; emulation times per-step calls",
        )
    tiles = tuple(steps[0].tiles)
    t = tiles[0]
    single = len(tiles) == 1 and (t.q0, t.q1, t.k0, t.k1) == (0, mask.seqlen_q, 0, mask.seqlen_k)
    pipe = Pipeline(members(topo), n, ChunkAttention(tiles, single), topo.deg.exchange, order)
    return UlyssesPlan(**common, notes=notes, steps=steps, pipe=pipe)


def ulysses_attention(q, k, v, plan: UlyssesPlan, ctx: RunCtx) -> torch.Tensor:
    if plan.pipe is not None:
        k, v = replicate_kv(k, v, plan.topo.deg)
        return PipelinedUlysses.apply(q, k, v, plan.pipe, ctx)
    qh, kh, vh = to_heads(q, k, v, plan, ctx)
    n = qh.shape[1]
    qh, kh, vh = plan.order.to_global((qh, kh, vh), ctx)
    with ctx.timer:
        out, _ = plan.whole_fn(qh, kh, vh)
    (out,) = plan.order.to_buffer((out,), ctx, n)
    return to_seq(out, plan, ctx)


def ulysses_emulated(plan: UlyssesPlan, glob: StepInputs, mode: str) -> Callable[[], object]:
    """Every head chunk's calls on the rank's heads in global token order."""
    if plan.no_steps:
        raise Unsupported(plan.no_steps)
    q, k, v, dout = rank_heads(plan, glob)
    n = plan.topo.deg.head_chunks
    hq, hk = plan.heads_q // n, plan.heads_kv // n
    calls = []
    for c in range(n):
        qs, ks = slice(c * hq, (c + 1) * hq), slice(c * hk, (c + 1) * hk)
        kv = torch.stack([k[:, :, ks], v[:, :, ks]])
        bufs = RankBuffers(q[:, :, qs].contiguous(), dout[:, :, qs].contiguous(), lambda m, kv=kv: kv)
        calls.append(tiled_step(plan, bufs, mode))
    return lambda: [f() for f in calls]


def check_exchange_options(
    strategy: Strategy, cp: Mapping | CPConfig, deg: Degrees, shape: ShapeSpec
) -> Degrees:
    """cp.head_chunks and cp.exchange, checked and resolved into the degrees the plan reads."""
    opts = strategy.settings(cp)
    chunks = resolve_chunks(opts.head_chunks, deg, shape)
    return replace(deg, head_chunks=chunks, exchange=check_exchange(opts.exchange))


class Ulysses(Strategy):
    name = "ulysses"
    summary = (
        "all-to-all to head sharding, full mask per head group, all-to-all back (cp.exchange, cp.head_chunks)"
    )

    config = UlyssesCPConfig

    def degrees(self, cp: UlyssesCPConfig, world: int) -> Degrees:
        return Degrees(ulysses=degree(cp.ulysses_degree, world), ring=1)

    def check(self, cp: Mapping | CPConfig, shape: ShapeSpec, world: int) -> Degrees:
        return check_exchange_options(self, cp, super().check(cp, shape, world), shape)

    def group_specs(self, topo: Topology) -> dict:
        return {"uly": [topo.uly_ranks(i) for i in range(topo.deg.ring)]}

    def plan(
        self, mask: AttnMask, shard: Shard, topo: Topology, kernel: Kernel, shape: ShapeSpec
    ) -> UlyssesPlan:
        return ulysses_plan(mask, shard, topo, kernel, shape)

    def attention(self, q, k, v, plan: UlyssesPlan, ctx: RunCtx) -> torch.Tensor:
        return ulysses_attention(q, k, v, plan, ctx)

    def emulated_step(self, plan: UlyssesPlan, glob: StepInputs, mode: str) -> Callable[[], object]:
        return ulysses_emulated(plan, glob, mode)

    def comm_bytes(self, plan: UlyssesPlan, shape: ShapeSpec, mode: str) -> float:
        return mesh_bytes(plan, shape, mode)
