"""Ulysses (DeepSpeed): all-to-all q, k, v from sequence-sharded to head-sharded, attention over
the whole sequence with the FULL global mask on H/U heads, all-to-all back.

After the all-to-all the tokens sit in shard order (each rank's runs back to back); they are
put into global order so the kernel sees the original mask (causal stays is_causal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcab.config import UlyssesCPConfig
from lcab.cp.base import Degrees, RunCtx, Strategy, Topology, degree
from lcab.cp.emulation import RankBuffers, mesh_bytes, rank_heads, tiled_step
from lcab.cp.heads import group_concat_runs, local_shape, to_heads, to_seq
from lcab.cp.sharding import Shard
from lcab.cp.submask import Run
from lcab.cp.tiled_lse import Step, TiledLseAttention, TiledPlan
from lcab.cp.tiles import StepCache, make_tiles
from lcab.harness.inputs import StepInputs
from lcab.kernels.base import Kernel, ShapeSpec, Unsupported
from lcab.masks.slices import AttnMask


@dataclass(frozen=True, kw_only=True)
class UlyssesPlan(TiledPlan):
    perm: torch.Tensor | None  # position in the all-to-all buffer of each global token; None = identity
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
            whole_fn=whole_fn,
            no_steps=f"{kernel.name} has no step functions; emulation times per-step calls"
            if whole_fn
            else "",
        )

    def attention(self, q, k, v, plan: UlyssesPlan, ctx: RunCtx) -> torch.Tensor:
        qh, kh, vh = to_heads(q, k, v, plan, ctx)
        perm = plan.perm
        if perm is not None:
            qh, kh, vh = (t.index_select(1, perm) for t in (qh, kh, vh))
        if plan.whole_fn is not None:
            with ctx.timer:
                out, _ = plan.whole_fn(qh, kh, vh)
        else:
            out = TiledLseAttention.apply(qh, kh, vh, plan, ctx)
        if perm is not None:
            out = out.new_zeros(
                qh.shape[0], plan.shard.local_len * plan.topo.deg.ulysses, *out.shape[2:]
            ).index_copy(1, perm, out)
        return to_seq(out, plan, ctx)

    def emulated_step(self, plan: UlyssesPlan, glob: StepInputs, mode: str) -> Callable[[], object]:
        if plan.no_steps:
            raise Unsupported(plan.no_steps)
        q, k, v, dout = rank_heads(plan, glob)  # global token order: the whole mask per head group
        kv = torch.stack([k, v])
        return tiled_step(plan, RankBuffers(q, dout, lambda m: kv), mode)

    def comm_bytes(self, plan: UlyssesPlan, shape: ShapeSpec, mode: str) -> float:
        return mesh_bytes(plan, shape, mode)
