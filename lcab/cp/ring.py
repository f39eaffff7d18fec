"""Ring attention (P2P): K/V travel around the ring while each rank computes its queries against
the block it holds; partial (out, lse) merge in fp32; backward sends dK/dV around with K/V.

Step t on ring member i uses the K/V of member (i - t) mod R; the exchange for step t+1 is in
flight (batched isend/irecv, NCCL's own stream on GPU) while step t computes. A step whose
sub-mask is empty computes nothing but still forwards the block. Forward: R-1 K/V exchanges;
backward: R-1 K/V exchanges and R dK/dV exchanges (the last one hands dK/dV to the owner),
on a separate process group so both directions can overlap. dK/dV travel in fp32.
The same code runs USP (a Ulysses all-to-all around it, ring over Ulysses groups).
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
from lcab.cp.sharding import Shard
from lcab.cp.ulysses import HeadToSeq, group_concat_runs, local_shape, to_heads
from lcab.kernels.base import Kernel, ShapeSpec
from lcab.masks.slices import AttnMask


def _forward_tiles(q, kv, tiles, acc: LseAccumulator) -> None:
    for t in tiles:
        o, lse = t.fns.fwd(q[:, t.q0 : t.q1], kv[0][:, t.k0 : t.k1], kv[1][:, t.k0 : t.k1])
        acc.add(o, lse, t.q0, t.q1)


def _backward_tiles(dout, q, kv, out, lse, tiles, dq, dkv) -> None:
    for t in tiles:
        a, b, c, d = t.q0, t.q1, t.k0, t.k1
        g = t.fns.bwd(dout[:, a:b], q[:, a:b], kv[0][:, c:d], kv[1][:, c:d], out[:, a:b], lse[:, :, a:b])
        dq[:, a:b] += g[0]
        dkv[0][:, c:d] += g[1]
        dkv[1][:, c:d] += g[2]


def rotating(kv, steps: int, comm, to: int, frm: int, group, kind: str):
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


def backward_step(dout, q, kv, out, lse, tiles, dq) -> torch.Tensor:
    """One step's tiles: adds into dq, returns this step's dK/dV as a fresh fp32 buffer. A single
    tile over every key row (the common zigzag step) is copied in, saving a zero-fill and an add."""
    n = kv.shape[2]
    if len(tiles) == 1 and tiles[0].k0 == 0 and tiles[0].k1 == n:
        t = tiles[0]
        g = t.fns.bwd(
            dout[:, t.q0 : t.q1], q[:, t.q0 : t.q1], kv[0], kv[1], out[:, t.q0 : t.q1], lse[:, :, t.q0 : t.q1]
        )
        dq[:, t.q0 : t.q1] += g[0]
        part = torch.empty(kv.shape, dtype=dq.dtype, device=dq.device)
        part[0].copy_(g[1])
        part[1].copy_(g[2])
        return part
    part = torch.zeros(kv.shape, dtype=dq.dtype, device=dq.device)
    _backward_tiles(dout, q, kv, out, lse, tiles, dq, part)
    return part


def _ring_blocks(kv, plan: RankPlan, comm, group: str, kind: str):
    hop = plan.extra.get("hop")
    if not hop:  # a ring of one: the local block is the only one
        return iter([kv] * len(plan.steps))
    return rotating(kv, len(plan.steps), comm, hop["next"], hop["prev"], plan.topo.groups[group], kind)


class RingFn(torch.autograd.Function):
    """q [B, Lq, H, D], k/v [B, Lk, Hkv, D] local buffers; plan.steps = [(member, tiles)]."""

    @staticmethod
    def forward(ctx, q, k, v, plan: RankPlan, run: RunCtx):
        comm, timer = run.comm, run.timer
        acc = LseAccumulator(q)
        blocks = _ring_blocks(torch.stack([k, v]), plan, comm, "ring", "ring_kv")
        for kv, (_, tiles) in zip(blocks, plan.steps, strict=True):
            with timer:
                _forward_tiles(q, kv, tiles, acc)
        out = acc.out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, acc.lse)
        ctx.plan, ctx.run = plan, run
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        plan, comm, timer = ctx.plan, ctx.run.comm, ctx.run.timer
        hop = plan.extra.get("hop")
        dout = dout.contiguous()
        adt = acc_dtype(q.dtype)
        dq = torch.zeros(q.shape, dtype=adt, device=q.device)
        pending = None  # (handle, buffer) of the dK/dV that arrives for the block held next
        blocks = _ring_blocks(torch.stack([k, v]), plan, comm, "ring", "ring_kv_bwd")
        for kv, (_, tiles) in zip(blocks, plan.steps, strict=True):
            with timer:
                part = backward_step(dout, q, kv, out, lse, tiles, dq)
            if pending is not None:
                pending[0].wait()
                part += pending[1]
            if hop:
                recv = torch.empty_like(part)
                pending = (
                    comm.exchange(
                        part, recv, hop["next"], hop["prev"], plan.topo.groups["ring_dkv"], "ring_dkv"
                    ),
                    recv,
                )
            else:
                pending = None
                dkv = part
        if pending is not None:
            pending[0].wait()
            dkv = pending[1]
        return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype), None, None


def ring_plan(
    mask: AttnMask, shard: Shard, topo: Topology, kernel: Kernel, shape: ShapeSpec, order: list[int]
) -> RankPlan:
    """Tiles of this rank's (Ulysses-group) queries against the blocks of ring members in `order`."""
    ls = local_shape(shape, topo.deg)
    i = topo.ring_index
    cache = StepCache(kernel, ls)
    q_runs = group_concat_runs(shard, topo, i)
    steps = [(m, make_tiles(mask, q_runs, group_concat_runs(shard, topo, m), cache)) for m in order]
    plan = RankPlan(shard, topo, ls.heads_q, ls.heads_kv, steps=steps)
    plan.area = sum(t.area for _, tiles in steps for t in tiles) / topo.deg.ulysses
    plan.notes["step_forms"] = sorted(cache.forms)
    plan.notes["empty_steps"] = sum(1 for _, tiles in steps if not tiles)
    r = topo.deg.ring
    if r > 1:
        ranks = topo.ring_ranks()
        plan.extra["hop"] = {"next": ranks[(i + 1) % r], "prev": ranks[(i - 1) % r]}
    return plan


class RingLike(Strategy):
    """Ulysses degree U (1 for plain ring) x ring degree R."""

    def group_specs(self, topo: Topology) -> dict:
        rings = [topo.ring_ranks(u) for u in range(topo.deg.ulysses)]
        return {"ring": rings, "ring_dkv": rings, "uly": [topo.uly_ranks(i) for i in range(topo.deg.ring)]}

    def plan(self, mask, shard, topo, kernel, shape) -> RankPlan:
        i, r = topo.ring_index, topo.deg.ring
        return ring_plan(mask, shard, topo, kernel, shape, [(i - t) % r for t in range(r)])

    def attention(self, q, k, v, plan: RankPlan, ctx: RunCtx) -> torch.Tensor:
        u = plan.topo.deg.ulysses
        if u == 1:
            return RingFn.apply(q, k, v, plan, ctx)
        qh, kh, vh = to_heads(q, k, v, plan, ctx)
        out = RingFn.apply(qh, kh, vh, plan, ctx)
        return HeadToSeq.apply(out, plan.topo.groups.get("uly"), u, ctx.comm, "a2a_out")


@register
class Ring(RingLike):
    name = "ring"
    summary = "P2P ring: K/V rotate with send/recv overlapped with compute, fp32 LSE merge"

    def degrees(self, cp: dict, world: int) -> Degrees:
        return Degrees(ulysses=1, ring=degree(cp.get("ring_degree", 0), world))
