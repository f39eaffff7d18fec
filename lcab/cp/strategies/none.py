"""`none`: the identity strategy, context parallelism of degree 1 (as torchtitan treats a CP
degree of 1). One rank holds every token; its plan is the kernel's own prepared function on the
whole mask, so a single-device cell runs the same cell pipeline as every CP strategy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from lcab.config import ConfigError, CPConfig
from lcab.cp.base import Degrees, RankPlan, RunCtx, Strategy, Topology
from lcab.cp.sharding import Shard
from lcab.harness import memory
from lcab.harness.inputs import StepInputs
from lcab.harness.step import training_step
from lcab.kernels.base import AttnFn, Kernel, ShapeSpec
from lcab.masks.slices import AttnMask


@dataclass(frozen=True, kw_only=True)
class IdentityPlan(RankPlan):
    fn: AttnFn  # kernel.prepare(mask, shape): mask-dependent work done outside the timing


class Identity(Strategy):
    name = "none"
    summary = "no context parallelism: one device, the kernel on the whole mask"

    def degrees(self, cp: CPConfig, world: int) -> Degrees:
        if world != 1:
            raise ConfigError(f"cp=none runs on one process; got world {world} (use a cp strategy)")
        return Degrees(ulysses=1, ring=1)

    def shard(self, cp: Mapping | CPConfig, mask: AttnMask, world: int) -> Shard:
        n = mask.seqlen_q
        return Shard("none", n, [[(0, n)]], n, {"pad_tokens": 0, "tokens_per_rank": [n]})

    def footprint(self, shape: ShapeSpec, seqlen: int, mode: str, world: int, extra: int) -> memory.Footprint:
        return memory.before_mask(shape, seqlen, mode, extra)

    def mask_footprint(
        self, kernel: Kernel, mask: AttnMask, shape: ShapeSpec, mode: str, verify: bool, extra: int
    ) -> memory.Footprint:
        # The kernel's declared working set and verify's references.
        return memory.estimate(kernel, mask, shape, mode, verify, extra)

    def plan(
        self, mask: AttnMask, shard: Shard, topo: Topology, kernel: Kernel, shape: ShapeSpec
    ) -> IdentityPlan:
        fn = kernel.prepare(mask, shape)
        notes = dict(getattr(fn, "notes", {}))
        return IdentityPlan(
            shard=shard,
            topo=topo,
            heads_q=shape.heads_q,
            heads_kv=shape.heads_kv,
            area=mask.area,
            notes=notes,
            fn=fn,
        )

    def process_groups(self, topo: Topology, source: str, device: torch.device) -> dict:
        return {}  # one rank: nothing to talk to

    def local_inputs(self, glob: StepInputs, plan: RankPlan) -> StepInputs:
        return glob  # the rank's share is everything: no copy

    def gather(self, got: dict[str, torch.Tensor], plan: RankPlan) -> dict:
        return got

    def step_fn(self, plan: IdentityPlan, ctx: RunCtx) -> AttnFn:
        return plan.fn

    def attention(self, q, k, v, plan: IdentityPlan, ctx: RunCtx) -> torch.Tensor:
        return plan.fn(q, k, v)[0]

    def emulated_step(self, plan: IdentityPlan, glob: StepInputs, mode: str) -> Callable[[], object]:
        return training_step(plan.fn, glob, mode)

    def comm_bytes(self, plan: RankPlan, shape: ShapeSpec, mode: str) -> float:
        return 0.0
