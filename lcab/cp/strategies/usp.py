"""USP (yunchang): Ulysses inside a group x ring across groups on a 2-D mesh.

cp.ulysses_intra_node (default true) puts each Ulysses group on consecutive ranks (one node,
NVLink) and the ring across them; false swaps the two. cp.exchange is the Ulysses exchange at any
ring degree; with ring degree 1 it is Ulysses and runs as Ulysses does (cp.head_chunks included),
not as a ring of one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from lcab.config import ConfigError, CPConfig, UspCPConfig
from lcab.cp.base import Degrees, RunCtx, mesh_degrees
from lcab.cp.rings import RingLike
from lcab.cp.strategies.ulysses import (
    check_exchange_options,
    ulysses_attention,
    ulysses_emulated,
    ulysses_plan,
)
from lcab.harness.inputs import StepInputs
from lcab.kernels.base import ShapeSpec


class Usp(RingLike):
    name = "usp"
    summary = "Ulysses degree x ring degree (2-D mesh), ring over Ulysses groups"

    config = UspCPConfig

    def degrees(self, cp: UspCPConfig, world: int) -> Degrees:
        return mesh_degrees(cp, world, self.name)

    def check(self, cp: Mapping | CPConfig, shape: ShapeSpec, world: int) -> Degrees:
        deg = super().check(cp, shape, world)
        chunks = self.settings(cp).head_chunks
        if deg.ring > 1 and chunks != 1:  # the ring's Ulysses exchange is not pipelined
            raise ConfigError(f"usp head_chunks {chunks} needs ring degree 1 (ring degree is {deg.ring})")
        return check_exchange_options(self, cp, deg, shape)

    def plan(self, mask, shard, topo, kernel, shape):
        if topo.deg.ring == 1:
            return ulysses_plan(mask, shard, topo, kernel, shape)
        return super().plan(mask, shard, topo, kernel, shape)

    def attention(self, q, k, v, plan, ctx: RunCtx) -> torch.Tensor:
        if plan.topo.deg.ring == 1:
            return ulysses_attention(q, k, v, plan, ctx)
        return super().attention(q, k, v, plan, ctx)

    def emulated_step(self, plan, glob: StepInputs, mode: str) -> Callable[[], object]:
        if plan.topo.deg.ring == 1:
            return ulysses_emulated(plan, glob, mode)
        return super().emulated_step(plan, glob, mode)
