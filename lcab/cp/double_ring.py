"""LoongTrain's double ring: the ring of R ranks cut into windows of consecutive ranks; K/V
rotate on an inner ring inside each window while the next window's block travels on the outer
ring (window to window, same position). dK/dV use their own inner and outer groups, so the two
directions overlap. Window count = cp.windows, or the largest divisor i of R with i <= R / i.

Rank (window w, position j) visits, at outer step o and inner step t, the block of
(w - o, j - t): every block once, R - 1 K/V hops per rank in total, as in the plain ring.
"""

from __future__ import annotations

import torch

from lcab.config import ConfigError
from lcab.cp.base import Degrees, RankPlan, RunCtx, Topology, degree, register
from lcab.cp.merge import LseAccumulator, acc_dtype
from lcab.cp.ring import RingLike, _forward_tiles, backward_step, ring_plan, rotating
from lcab.cp.ulysses import HeadToSeq, to_heads


def default_windows(r: int) -> int:
    return max(i for i in range(1, r + 1) if r % i == 0 and i * i <= r)


class DoubleRingFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: RankPlan, run: RunCtx):
        comm, timer, g, x = run.comm, run.timer, plan.topo.groups, plan.extra["dr"]
        nw, ws = x["nw"], x["ws"]
        acc = LseAccumulator(q)
        outer = rotating(torch.stack([k, v]), nw, comm, x["o_next"], x["o_prev"], g["outer"], "outer_kv")
        for o, kv_outer in enumerate(outer):
            inner = rotating(kv_outer, ws, comm, x["i_next"], x["i_prev"], g["inner"], "inner_kv")
            for t, kv in enumerate(inner):
                with timer:
                    _forward_tiles(q, kv, plan.steps[o * ws + t][1], acc)
        out = acc.out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, acc.lse)
        ctx.plan, ctx.run = plan, run
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        plan, comm, timer = ctx.plan, ctx.run.comm, ctx.run.timer
        g, x = plan.topo.groups, plan.extra["dr"]
        nw, ws = x["nw"], x["ws"]
        dout = dout.contiguous()
        adt = acc_dtype(q.dtype)
        dq = torch.zeros(q.shape, dtype=adt, device=q.device)
        outer_pending = None
        outer = rotating(torch.stack([k, v]), nw, comm, x["o_next"], x["o_prev"], g["outer"], "outer_kv_bwd")
        for o, kv_outer in enumerate(outer):
            inner_pending = None
            inner = rotating(kv_outer, ws, comm, x["i_next"], x["i_prev"], g["inner"], "inner_kv_bwd")
            for t, kv in enumerate(inner):
                with timer:
                    part = backward_step(dout, q, kv, out, lse, plan.steps[o * ws + t][1], dq)
                if inner_pending is not None:
                    inner_pending[0].wait()
                    part += inner_pending[1]
                if ws > 1:
                    recv = torch.empty_like(part)
                    h = comm.exchange(part, recv, x["i_next"], x["i_prev"], g["inner_dkv"], "inner_dkv")
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
                    comm.exchange(win, recv, x["o_next"], x["o_prev"], g["outer_dkv"], "outer_dkv"),
                    recv,
                )
            else:
                final = win
        if outer_pending is not None:
            outer_pending[0].wait()
            final = outer_pending[1]
        return dq.to(q.dtype), final[0].to(k.dtype), final[1].to(v.dtype), None, None


@register
class DoubleRing(RingLike):
    name = "double_ring"
    summary = "LoongTrain double ring: inner ring per window, outer ring across windows"

    def degrees(self, cp: dict, world: int) -> Degrees:
        u = degree(cp.get("ulysses_degree", 0), 1)
        r = degree(cp.get("ring_degree", 0), world // u if world % u == 0 else 0)
        nw = int(cp.get("windows", 0) or 0) or (default_windows(r) if r else 1)
        if r and r % nw:
            raise ConfigError(f"double_ring: {nw} windows do not divide ring degree {r}")
        return Degrees(ulysses=u, ring=r, windows=nw)

    def _layout(self, topo: Topology):
        nw = topo.deg.windows
        ws = topo.deg.ring // nw
        return nw, ws

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

    def plan(self, mask, shard, topo, kernel, shape) -> RankPlan:
        nw, ws = self._layout(topo)
        i = topo.ring_index
        w, j = divmod(i, ws)
        order = [((w - o) % nw) * ws + (j - t) % ws for o in range(nw) for t in range(ws)]
        plan = ring_plan(mask, shard, topo, kernel, shape, order)
        plan.extra.pop("hop", None)
        a = topo.uly_index
        plan.extra["dr"] = {
            "nw": nw,
            "ws": ws,
            "i_next": topo.rank_of(w * ws + (j + 1) % ws, a),
            "i_prev": topo.rank_of(w * ws + (j - 1) % ws, a),
            "o_next": topo.rank_of(((w + 1) % nw) * ws + j, a),
            "o_prev": topo.rank_of(((w - 1) % nw) * ws + j, a),
        }
        plan.notes["windows"] = nw
        plan.notes["window_size"] = ws
        return plan

    def attention(self, q, k, v, plan: RankPlan, ctx: RunCtx) -> torch.Tensor:
        u = plan.topo.deg.ulysses
        if u == 1:
            return DoubleRingFn.apply(q, k, v, plan, ctx)
        qh, kh, vh = to_heads(q, k, v, plan, ctx)
        out = DoubleRingFn.apply(qh, kh, vh, plan, ctx)
        return HeadToSeq.apply(out, plan.topo.groups.get("uly"), u, ctx.comm, "a2a_out")
