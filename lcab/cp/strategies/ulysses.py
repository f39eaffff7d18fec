"""Ulysses (DeepSpeed): all-to-all q, k, v from sequence-sharded to head-sharded, attention over
the whole sequence with the FULL global mask on H/U heads, all-to-all back.

After the all-to-all the tokens sit in shard order (each rank's runs back to back); they are
put into global order so the kernel sees the original mask (causal stays is_causal), except
under a full mask without padding, which no token order changes.

Issue 16 (exposed communication 4.7 ms vs 1.45 ms of all_to_all at S = 32K on H200): the work
around the exchange was counted as communication. Now: one copy per tensor before each
all_to_all and none after it at batch 1 (lcab.cp.heads), no reordering under a full mask, the
output reordered by one gather (not a zero-fill and a scatter), and a step of one call over the
whole buffer (every kernel with step functions on a mask it takes whole) runs as that call alone
(WholeCall): no fp32 accumulator, zero-fill, copy in and cast back forward, no fp32 dq and K/V
stack backward. Copies are timed as the region "layout", collectives as "comm".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcab.config import UlyssesCPConfig
from lcab.cp.base import Degrees, RunCtx, Strategy, Topology, degree
from lcab.cp.emulation import RankBuffers, mesh_bytes, rank_heads, tiled_step
from lcab.cp.heads import group_concat_runs, group_token_index, local_shape, to_heads, to_seq
from lcab.cp.sharding import Shard
from lcab.cp.submask import Run
from lcab.cp.tiled_lse import Step, TiledLseAttention, TiledPlan
from lcab.cp.tiles import StepCache, make_tiles
from lcab.harness.inputs import StepInputs
from lcab.kernels.base import Kernel, ShapeSpec, StepFns, Unsupported
from lcab.masks.forms import is_full
from lcab.masks.slices import AttnMask


class WholeCall(torch.autograd.Function):
    """One step function over the whole buffer: its output and gradients as the kernel gives them."""

    @staticmethod
    def forward(ctx, q, k, v, fns: StepFns, run: RunCtx):
        with run.timer:
            out, lse = fns.fwd(q, k, v)
            out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.fns, ctx.run = fns, run
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        with ctx.run.timer:
            dq, dk, dv = ctx.fns.bwd(dout.contiguous(), q, k, v, out, lse)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None


class Reorder(torch.autograd.Function):
    """x.index_select(1, idx), whose gradient is the inverse gather (not a zero-fill and a scatter)."""

    @staticmethod
    def forward(ctx, x, idx, inv, run: RunCtx):
        ctx.inv, ctx.run = inv, run
        with run.timer.region("layout"):
            return x.index_select(1, idx)

    @staticmethod
    def backward(ctx, g):
        with ctx.run.timer.region("layout"):
            return g.index_select(1, ctx.inv), None, None, None


def whole_call(steps: tuple[Step, ...], n: int) -> StepFns | None:
    """The step functions when the plan is one call over the whole n x n buffer, else None."""
    if len(steps) != 1 or len(steps[0].tiles) != 1:
        return None
    t = steps[0].tiles[0]
    return t.fns if (t.q0, t.q1, t.k0, t.k1) == (0, n, 0, n) else None


@dataclass(frozen=True, kw_only=True)
class UlyssesPlan(TiledPlan):
    perm: torch.Tensor | None  # position in the all-to-all buffer of each global token; None = identity
    # Global token of each buffer position (the output's way back), when the buffer has no padding.
    unperm: torch.Tensor | None = None
    single: StepFns | None = None  # whole_call(steps): the step is this one call
    # A kernel without step functions runs whole through its own autograd (Ulysses needs no LSE).
    whole_fn: Callable | None = None
    no_steps: str = ""  # why there are no per-step calls (emulation times those)


class Ulysses(Strategy):
    name = "ulysses"
    summary = "all-to-all to head sharding, full mask per head group, all-to-all back"

    config = UlyssesCPConfig

    def degrees(self, cp: UlyssesCPConfig, world: int) -> Degrees:
        return Degrees(ulysses=degree(cp.ulysses_degree, world), ring=1)

    def group_specs(self, topo: Topology) -> dict:
        return {"uly": [topo.uly_ranks(i) for i in range(topo.deg.ring)]}

    def plan(
        self, mask: AttnMask, shard: Shard, topo: Topology, kernel: Kernel, shape: ShapeSpec
    ) -> UlyssesPlan:
        ls = local_shape(shape, topo.deg)
        runs = group_concat_runs(shard, topo, 0)
        perm = torch.cat([torch.arange(r.l0, r.l0 + r.n) for r in runs])
        order = torch.cat([torch.arange(r.g0, r.g1) for r in runs])
        # perm_g[g] = position of global token g in the all-to-all buffer.
        perm_g = torch.empty_like(perm)
        perm_g[order] = perm
        identity = bool(torch.equal(perm_g, torch.arange(shard.local_len * topo.deg.ulysses)))
        order_buf = group_token_index(shard, topo, 0)  # -1 = padding
        padded = bool((order_buf < 0).any())
        # Full attention is the same in any token order (the same order on queries and keys).
        identity = identity or (is_full(mask) and not padded)
        whole = [Run(0, mask.seqlen_q, 0)]
        steps, whole_fn, notes = (), None, {}
        if kernel.has_steps(ls.device.type):  # its capabilities say per-step calls exist
            cache = StepCache(kernel, ls)
            try:
                steps = (Step(0, make_tiles(mask, whole, whole, cache)),)
                notes["step_forms"] = sorted(cache.forms)
            except Unsupported:  # no step form for this mask: the kernel runs it whole
                steps = ()
        if not steps:
            whole_fn = kernel.prepare(mask, ls)
            notes["ulysses_kernel_path"] = "prepare (compute time covers the forward only)"
        return UlyssesPlan(
            shard=shard,
            topo=topo,
            heads_q=ls.heads_q,
            heads_kv=ls.heads_kv,
            area=mask.area / topo.deg.ulysses,
            notes=notes,
            steps=steps,
            perm=None if identity else perm_g.to(shape.device),
            unperm=None if identity or padded else order_buf.to(shape.device),
            single=whole_call(steps, mask.seqlen_q),
            whole_fn=whole_fn,
            no_steps=f"{kernel.name} has no step functions; emulation times per-step calls"
            if whole_fn
            else "",
        )

    def attention(self, q, k, v, plan: UlyssesPlan, ctx: RunCtx) -> torch.Tensor:
        qh, kh, vh = to_heads(q, k, v, plan, ctx)
        perm = plan.perm
        if perm is not None and plan.unperm is not None:  # a permutation: gathers both ways
            qh, kh, vh = (Reorder.apply(t, perm, plan.unperm, ctx) for t in (qh, kh, vh))
        elif perm is not None:
            with ctx.timer.region("layout"):
                qh, kh, vh = (t.index_select(1, perm) for t in (qh, kh, vh))
        if plan.whole_fn is not None:
            with ctx.timer:
                out, _ = plan.whole_fn(qh, kh, vh)
        elif plan.single is not None:
            out = WholeCall.apply(qh, kh, vh, plan.single, ctx)
        else:
            out = TiledLseAttention.apply(qh, kh, vh, plan, ctx)
        if perm is not None:
            if plan.unperm is not None:
                out = Reorder.apply(out, plan.unperm, perm, ctx)
            else:  # padded positions stay zero
                with ctx.timer.region("layout"):
                    n = plan.shard.local_len * plan.topo.deg.ulysses
                    out = out.new_zeros(qh.shape[0], n, *out.shape[2:]).index_copy(1, perm, out)
        return to_seq(out, plan, ctx)

    def emulated_step(self, plan: UlyssesPlan, glob: StepInputs, mode: str) -> Callable[[], object]:
        if plan.no_steps:
            raise Unsupported(plan.no_steps)
        q, k, v, dout = rank_heads(plan, glob)  # global token order: the whole mask per head group
        kv = torch.stack([k, v])
        return tiled_step(plan, RankBuffers(q, dout, lambda m: kv), mode)

    def comm_bytes(self, plan: UlyssesPlan, shape: ShapeSpec, mode: str) -> float:
        return mesh_bytes(plan, shape, mode)
