"""LoongTrain's double ring: the ring of R ranks cut into windows of consecutive ranks; K/V
rotate on an inner ring inside each window while the next window's block travels on the outer
ring (window to window, same position). dK/dV use their own inner and outer groups, so the two
directions overlap. Window count = cp.windows, or the largest divisor i of R with i <= R / i.

Rank (window w, position j) visits, at outer step o and inner step t, the block of
(w - o, j - t): every block once, R - 1 K/V hops per rank in total, as in the plain ring.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from lcab.config import ConfigError, DoubleRingCPConfig
from lcab.cp.base import Degrees, RunCtx, Topology, degree
from lcab.cp.rings import RingLike, ring_plan, rotating
from lcab.cp.tiled_lse import GradFn, TiledPlan


def default_windows(r: int) -> int:
    return max(i for i in range(1, r + 1) if r % i == 0 and i * i <= r)


@dataclass(frozen=True)
class DoubleRingRoute:
    """K/V over the inner ring of a window, windows' blocks over the outer ring."""

    windows: int
    window_size: int
    i_next: int
    i_prev: int
    o_next: int
    o_prev: int

    def forward(self, kv: torch.Tensor, n: int, ctx: RunCtx) -> Iterator[torch.Tensor]:
        comm, g = ctx.comm, ctx.groups
        for kv_outer in rotating(kv, self.windows, comm, self.o_next, self.o_prev, g["outer"], "outer_kv"):
            yield from rotating(
                kv_outer, self.window_size, comm, self.i_next, self.i_prev, g["inner"], "inner_kv"
            )

    def backward(self, kv: torch.Tensor, n: int, ctx: RunCtx, grad: GradFn) -> torch.Tensor:
        comm, g = ctx.comm, ctx.groups
        nw, ws = self.windows, self.window_size
        outer_pending = None
        outer = rotating(kv, nw, comm, self.o_next, self.o_prev, g["outer"], "outer_kv_bwd")
        for o, kv_outer in enumerate(outer):
            inner_pending = None
            inner = rotating(kv_outer, ws, comm, self.i_next, self.i_prev, g["inner"], "inner_kv_bwd")
            for t, blk in enumerate(inner):
                part = grad(o * ws + t, blk)
                if inner_pending is not None:
                    inner_pending[0].wait()
                    part += inner_pending[1]
                if ws > 1:
                    recv = torch.empty_like(part)
                    h = comm.exchange(part, recv, self.i_next, self.i_prev, g["inner_dkv"], "inner_dkv")
                    inner_pending = (h, recv)
                else:
                    win = part
            if inner_pending is not None:
                inner_pending[0].wait()
                win = inner_pending[1]
            if outer_pending is not None:
                outer_pending[0].wait()
                win = win + outer_pending[1]
            if nw > 1:
                recv = torch.empty_like(win)
                outer_pending = (
                    comm.exchange(win, recv, self.o_next, self.o_prev, g["outer_dkv"], "outer_dkv"),
                    recv,
                )
            else:
                final = win
        if outer_pending is not None:
            outer_pending[0].wait()
            final = outer_pending[1]
        return final


class DoubleRing(RingLike):
    name = "double_ring"
    summary = "LoongTrain double ring: inner ring per window, outer ring across windows"

    config = DoubleRingCPConfig

    def degrees(self, cp: DoubleRingCPConfig, world: int) -> Degrees:
        u = degree(cp.ulysses_degree, 1)
        r = degree(cp.ring_degree, world // u if world % u == 0 else 0)
        nw = int(cp.windows or 0) or (default_windows(r) if r else 1)
        if r and r % nw:
            raise ConfigError(f"double_ring: {nw} windows do not divide ring degree {r}")
        return Degrees(ulysses=u, ring=r, windows=nw)

    def _layout(self, topo: Topology) -> tuple[int, int]:
        nw = topo.deg.windows
        return nw, topo.deg.ring // nw

    def group_specs(self, topo: Topology) -> dict:
        nw, ws = self._layout(topo)
        u = topo.deg.ulysses
        inner = [[topo.rank_of(w * ws + j, a) for j in range(ws)] for a in range(u) for w in range(nw)]
        outer = [[topo.rank_of(w * ws + j, a) for w in range(nw)] for a in range(u) for j in range(ws)]
        return {
            "inner": inner,
            "inner_dkv": inner,
            "outer": outer,
            "outer_dkv": outer,
            "uly": [topo.uly_ranks(i) for i in range(topo.deg.ring)],
        }

    def plan(self, mask, shard, topo, kernel, shape) -> TiledPlan:
        nw, ws = self._layout(topo)
        w, j = divmod(topo.ring_index, ws)
        a = topo.uly_index
        order = [((w - o) % nw) * ws + (j - t) % ws for o in range(nw) for t in range(ws)]
        route = DoubleRingRoute(
            windows=nw,
            window_size=ws,
            i_next=topo.rank_of(w * ws + (j + 1) % ws, a),
            i_prev=topo.rank_of(w * ws + (j - 1) % ws, a),
            o_next=topo.rank_of(((w + 1) % nw) * ws + j, a),
            o_prev=topo.rank_of(((w - 1) % nw) * ws + j, a),
        )
        notes = {"windows": nw, "window_size": ws}
        return ring_plan(mask, shard, topo, kernel, shape, order, route=route, notes=notes)
