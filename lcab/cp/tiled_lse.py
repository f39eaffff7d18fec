"""Attention of a rank's queries against a sequence of K/V blocks, tile by tile, with the partial
(out, lse) merged in fp32 (lcab.cp.merge); its backward recomputes per tile from the saved LSE.

A TiledPlan lists the steps (which block, which kernel calls on it); its Route says how the
blocks reach this rank and how their dK/dV go home: LocalRoute (the block is already here:
Ulysses after its all-to-all, a ring of one), rings.RingRoute, double_ring's two-level ring.
TiledLseAttention is the autograd function every ring-family strategy and Ulysses run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch

from lcab.cp.base import RankPlan, RunCtx
from lcab.cp.merge import LseAccumulator, RowSum
from lcab.cp.tiles import Tile

GradFn = Callable[[int, torch.Tensor], torch.Tensor]  # (step, K/V block) -> that block's fp32 dK/dV


class Step(NamedTuple):
    source: int | None  # ring member whose K/V block the step uses (None: the whole sequence)
    tiles: list[Tile]


class Route(Protocol):
    def forward(self, kv: torch.Tensor, n: int, ctx: RunCtx) -> Iterator[torch.Tensor]:
        """The K/V block ([2, B, L, H, D]) of each of the n steps, in order."""

    def backward(self, kv: torch.Tensor, n: int, ctx: RunCtx, grad: GradFn) -> torch.Tensor:
        """Visit the blocks again, call grad(step, block), and return this rank's own dK/dV."""


class LocalRoute:
    """Every step uses the local block; nothing travels."""

    def forward(self, kv: torch.Tensor, n: int, ctx: RunCtx) -> Iterator[torch.Tensor]:
        return iter([kv] * n)

    def backward(self, kv: torch.Tensor, n: int, ctx: RunCtx, grad: GradFn) -> torch.Tensor:
        total = grad(0, kv)
        for s in range(1, n):
            total += grad(s, kv)
        return total


LOCAL = LocalRoute()


@dataclass(frozen=True, kw_only=True)
class TiledPlan(RankPlan):
    steps: tuple[Step, ...] = ()
    route: Route = LOCAL

    @functools.cached_property
    def last(self) -> list[list[bool]]:
        """last_reach of the steps' tiles, once per plan (not per call)."""
        return last_reach([s.tiles for s in self.steps])


def last_reach(steps: list[list[Tile]]) -> list[list[bool]]:
    """Per tile, whether no later tile (later in its step or in a later step) reaches its rows:
    its merge is the rows' last (LseAccumulator.add(last=True))."""
    flat = [(t.q0, t.q1) for tiles in steps for t in tiles]
    out, i = [], 0
    for tiles in steps:
        flags = []
        for t in tiles:
            i += 1
            flags.append(not any(a < t.q1 and t.q0 < b for a, b in flat[i:]))
        out.append(flags)
    return out


def forward_tiles(q, kv, tiles: list[Tile], acc: LseAccumulator, last: list[bool] | None = None) -> None:
    for i, t in enumerate(tiles):
        o, lse = t.fns.fwd(q[:, t.q0 : t.q1], kv[0][:, t.k0 : t.k1], kv[1][:, t.k0 : t.k1])
        acc.add(o, lse, t.q0, t.q1, last=bool(last and last[i]))


def backward_tiles(dout, q, kv, out, lse, tiles: list[Tile], dq, dkv) -> None:
    for t in tiles:
        a, b, c, d = t.q0, t.q1, t.k0, t.k1
        g = t.fns.bwd(dout[:, a:b], q[:, a:b], kv[0][:, c:d], kv[1][:, c:d], out[:, a:b], lse[:, :, a:b])
        dq.add(g[0], a, b)
        dkv[0][:, c:d] += g[1]
        dkv[1][:, c:d] += g[2]


def backward_step(dout, q, kv, out, lse, tiles: list[Tile], dq) -> torch.Tensor:
    """One step's tiles: adds into dq (a RowSum), returns this step's dK/dV as a fresh fp32 buffer. A single
    tile over every key row (the common zigzag step) is copied in, saving a zero-fill and an add."""
    n = kv.shape[2]
    if len(tiles) == 1 and tiles[0].k0 == 0 and tiles[0].k1 == n:
        t = tiles[0]
        g = t.fns.bwd(
            dout[:, t.q0 : t.q1], q[:, t.q0 : t.q1], kv[0], kv[1], out[:, t.q0 : t.q1], lse[:, :, t.q0 : t.q1]
        )
        dq.add(g[0], t.q0, t.q1)
        part = torch.empty(kv.shape, dtype=dq.acc, device=dq.device)
        part[0].copy_(g[1])
        part[1].copy_(g[2])
        return part
    part = torch.zeros(kv.shape, dtype=dq.acc, device=dq.device)
    backward_tiles(dout, q, kv, out, lse, tiles, dq, part)
    return part


class TiledLseAttention(torch.autograd.Function):
    """q [B, Lq, H, D], k/v [B, Lk, Hkv, D] local buffers; the plan's steps along its route."""

    @staticmethod
    def forward(ctx, q, k, v, plan: TiledPlan, run: RunCtx):
        acc = LseAccumulator(q)
        blocks = plan.route.forward(torch.stack([k, v]), len(plan.steps), run)
        for kv, step, flags in zip(blocks, plan.steps, plan.last, strict=True):
            with run.timer:
                forward_tiles(q, kv, step.tiles, acc, flags)
        out, lse = acc.result(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan, ctx.run = plan, run
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        plan, run = ctx.plan, ctx.run
        dout = dout.contiguous()
        dq = RowSum(q.shape, q.dtype, q.device)

        def grad(s: int, kv: torch.Tensor) -> torch.Tensor:
            with run.timer:
                return backward_step(dout, q, kv, out, lse, plan.steps[s].tiles, dq)

        dkv = plan.route.backward(torch.stack([k, v]), len(plan.steps), run, grad)
        return dq.result(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype), None, None
