"""The ring family's shared machinery: K/V rotation with the next hop in flight, the plan of a
rank's queries against ring members' blocks, and RingLike, the Ulysses x ring strategy base
(ring, usp, double_ring).

Step t on ring member i uses the K/V of member (i - t) mod R; the exchange for step t+1 is in
flight (batched isend/irecv, NCCL's own stream on GPU) while step t computes. A step whose
sub-mask is empty computes nothing but still forwards the block. Forward: R-1 K/V exchanges;
backward: R-1 K/V exchanges and R dK/dV exchanges (the last one hands dK/dV to the owner),
on a separate process group so both directions can overlap. dK/dV travel in fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from lcab.cp.base import RunCtx, Strategy, Topology
from lcab.cp.emulation import RankBuffers, mesh_bytes, rank_heads, take_rows, tiled_step
from lcab.cp.heads import group_concat_runs, group_token_index, local_shape, to_heads, to_seq
from lcab.cp.sharding import Shard
from lcab.cp.tiled_lse import LOCAL, GradFn, Route, Step, TiledLseAttention, TiledPlan
from lcab.cp.tiles import StepCache, make_tiles
from lcab.harness.inputs import StepInputs
from lcab.kernels.base import Kernel, ShapeSpec
from lcab.masks.slices import AttnMask


def rotating(kv, steps: int, comm, to: int, frm: int, group, kind: str) -> Iterator[torch.Tensor]:
    """Yields the block held at each of `steps` ring steps. The hop that brings the next block
    is in flight while the caller computes on the current one; the last step sends nothing."""
    for s in range(steps):
        h = None
        if s < steps - 1:
            nxt = torch.empty_like(kv)
            h = comm.exchange(kv, nxt, to, frm, group, kind)
        yield kv
        if h is not None:
            h.wait()
            kv = nxt


@dataclass(frozen=True)
class RingRoute:
    """K/V rotate over the "ring" group; dK/dV follow them over "ring_dkv" back to the owner."""

    next: int  # global rank K/V are sent to
    prev: int  # global rank they come from

    def forward(self, kv: torch.Tensor, n: int, ctx: RunCtx) -> Iterator[torch.Tensor]:
        return rotating(kv, n, ctx.comm, self.next, self.prev, ctx.groups["ring"], "ring_kv")

    def backward(self, kv: torch.Tensor, n: int, ctx: RunCtx, grad: GradFn) -> torch.Tensor:
        comm, g = ctx.comm, ctx.groups
        pending = None  # (handle, buffer) of the dK/dV that arrives for the block held next
        for s, blk in enumerate(rotating(kv, n, comm, self.next, self.prev, g["ring"], "ring_kv_bwd")):
            part = grad(s, blk)
            if pending is not None:
                pending[0].wait()
                part += pending[1]
            recv = torch.empty_like(part)
            pending = (comm.exchange(part, recv, self.next, self.prev, g["ring_dkv"], "ring_dkv"), recv)
        pending[0].wait()
        return pending[1]


def ring_plan(
    mask: AttnMask,
    shard: Shard,
    topo: Topology,
    kernel: Kernel,
    shape: ShapeSpec,
    order: list[int],
    route: Route | None = None,
    notes: dict | None = None,
) -> TiledPlan:
    """Tiles of this rank's (Ulysses-group) queries against the blocks of ring members in
    `order`; the route is the plain ring's unless given (a ring of one moves nothing)."""
    ls = local_shape(shape, topo.deg)
    i, r = topo.ring_index, topo.deg.ring
    cache = StepCache(kernel, ls)
    q_runs = group_concat_runs(shard, topo, i)
    steps = tuple(Step(m, make_tiles(mask, q_runs, group_concat_runs(shard, topo, m), cache)) for m in order)
    if route is None and r > 1:
        ranks = topo.ring_ranks()
        route = RingRoute(next=ranks[(i + 1) % r], prev=ranks[(i - 1) % r])
    return TiledPlan(
        shard=shard,
        topo=topo,
        heads_q=ls.heads_q,
        heads_kv=ls.heads_kv,
        steps=steps,
        route=route or LOCAL,
        area=sum(t.area for s in steps for t in s.tiles) / topo.deg.ulysses,
        notes={
            "step_forms": sorted(cache.forms),
            "empty_steps": sum(1 for s in steps if not s.tiles),
            **(notes or {}),
        },
    )


class RingLike(Strategy):
    """Ulysses degree U (1 for plain ring) x ring degree R; a Ulysses all-to-all around the ring."""

    def group_specs(self, topo: Topology) -> dict:
        rings = [topo.ring_ranks(u) for u in range(topo.deg.ulysses)]
        return {"ring": rings, "ring_dkv": rings, "uly": [topo.uly_ranks(i) for i in range(topo.deg.ring)]}

    def plan(self, mask, shard, topo, kernel, shape) -> TiledPlan:
        i, r = topo.ring_index, topo.deg.ring
        return ring_plan(mask, shard, topo, kernel, shape, [(i - t) % r for t in range(r)])

    def attention(self, q, k, v, plan: TiledPlan, ctx: RunCtx) -> torch.Tensor:
        if plan.topo.deg.ulysses == 1:
            return TiledLseAttention.apply(q, k, v, plan, ctx)
        qh, kh, vh = to_heads(q, k, v, plan, ctx)
        return to_seq(TiledLseAttention.apply(qh, kh, vh, plan, ctx), plan, ctx)

    def emulated_step(self, plan: TiledPlan, glob: StepInputs, mode: str) -> Callable[[], object]:
        q, k, v, dout = rank_heads(plan, glob)
        shard, topo = plan.shard, plan.topo
        qi = group_token_index(shard, topo, topo.ring_index).to(q.device)
        blocks: dict[int, torch.Tensor] = {}

        def kv_of(m: int) -> torch.Tensor:
            if m not in blocks:
                i = group_token_index(shard, topo, m).to(q.device)
                blocks[m] = torch.stack([take_rows(k, i), take_rows(v, i)])
            return blocks[m]

        return tiled_step(plan, RankBuffers(take_rows(q, qi), take_rows(dout, qi), kv_of), mode)

    def comm_bytes(self, plan: TiledPlan, shape: ShapeSpec, mode: str) -> float:
        return mesh_bytes(plan, shape, mode)
