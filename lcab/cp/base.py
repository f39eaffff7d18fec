"""The CP strategy contract and rank topology.

A strategy (one module of lcab.cp.strategies, found by lcab.cp.registry)
  check(cp, shape, world) -> Degrees    raises ConfigError / Unsupported with one clear line
  plan(mask, shard, topo, kernel, shape) -> RankPlan   typed, everything mask-dependent, built
                                        outside timing and never written to afterwards
  process_groups(topo, source, device) -> the cell's groups by name (collective)
  attention(q, k, v, plan, ctx) -> out  differentiable; talks only through ctx.comm / ctx.groups
  emulated_step(plan, glob, mode), comm_bytes(plan, shape, mode)   cp.emulate on one device
and, with defaults every sharded strategy shares (the identity strategy `none` overrides them):
  shard, footprint / mask_footprint (memory before the mask / with it), local_inputs, gather,
  step_fn (the (q, k, v) -> (out, lse) function the harness times and verifies)
Ranks sit on a 2-D mesh (ring x ulysses); with cp.ulysses_intra_node (default) the Ulysses
groups are consecutive ranks (rank = ring_index * U + u), so the all-to-all stays on NVLink.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace

import torch

from lcab.config import ConfigError, CPConfig, MeshCPConfig, RingCPConfig
from lcab.cp.comm import Comm
from lcab.cp.groups import cell_groups
from lcab.cp.sharding import Shard, make_shard
from lcab.cp.timer import ComputeTimer
from lcab.cp.tokens import gather_global, local_inputs
from lcab.harness import memory
from lcab.harness.inputs import StepInputs
from lcab.kernels.base import AttnFn, Kernel, ShapeSpec, Unsupported
from lcab.masks.forms import full_or_causal
from lcab.masks.slices import AttnMask


@dataclass(frozen=True)
class Degrees:
    ulysses: int
    ring: int
    kv_replicas: int = 1  # KV heads replicated this many times to reach the Ulysses degree
    windows: int = 1  # double_ring
    head_chunks: int = 1  # Ulysses exchange pipelined over this many head chunks (lcab.cp.head_pipeline)
    exchange: str = "all_to_all"  # how Ulysses moves heads (lcab.cp.head_exchange)


@dataclass(frozen=True)
class Topology:
    """Where this rank sits on the (ring x ulysses) mesh."""

    world: int
    rank: int
    deg: Degrees
    intra: bool = True

    def coords(self, rank: int) -> tuple[int, int]:
        """(ring index, ulysses index) of a global rank."""
        u, r = self.deg.ulysses, self.deg.ring
        return (rank // u, rank % u) if self.intra else (rank % r, rank // r)

    def rank_of(self, ring: int, uly: int) -> int:
        u, r = self.deg.ulysses, self.deg.ring
        return ring * u + uly if self.intra else uly * r + ring

    @property
    def ring_index(self) -> int:
        return self.coords(self.rank)[0]

    @property
    def uly_index(self) -> int:
        return self.coords(self.rank)[1]

    def ring_ranks(self, uly: int | None = None) -> list[int]:
        uly = self.uly_index if uly is None else uly
        return [self.rank_of(i, uly) for i in range(self.deg.ring)]

    def uly_ranks(self, ring: int | None = None) -> list[int]:
        ring = self.ring_index if ring is None else ring
        return [self.rank_of(ring, j) for j in range(self.deg.ulysses)]

    def at(self, rank: int) -> Topology:
        return replace(self, rank=rank)


@dataclass
class RunCtx:
    """What attention() needs besides tensors and its plan: this cell's process groups by name,
    the comm wrapper and the compute timer (one RunCtx per cell)."""

    comm: Comm
    timer: ComputeTimer
    groups: dict = field(default_factory=dict)  # name -> ProcessGroup (empty when emulating)


@dataclass(frozen=True, kw_only=True)
class RankPlan:
    """One rank's plan; strategies subclass it with their own typed fields."""

    shard: Shard  # the token layout the harness cuts and gathers (a peer may lay tokens its own way)
    topo: Topology
    heads_q: int  # per rank after the Ulysses split
    heads_kv: int
    area: float = 0.0  # visible (q, k) pairs this rank computes, in units of all heads
    notes: dict = field(default_factory=dict)  # recorded with the row
    no_backward: str = ""  # why this plan's backward cannot run ("" = it can)


class Strategy:
    name: str = ""
    summary: str = ""
    # Why cp.emulate cannot run this strategy at all ("" = see emulated_step), checked first.
    cannot_emulate: str = ""
    # The schema of cp/<name>.yaml (lcab.config): the fields this strategy reads, no other's.
    config: type[CPConfig] = CPConfig

    def settings(self, cp: Mapping | CPConfig) -> CPConfig:
        """cp as this strategy's schema: a row's or a test's dict keeps the keys the schema has,
        the rest from the schema's defaults (0 degrees = the rest of the world)."""
        if isinstance(cp, CPConfig):
            return cp
        names = {f.name for f in fields(self.config)}
        return self.config(**{k: v for k, v in {"name": self.name, **cp}.items() if k in names})

    def degrees(self, cp: CPConfig, world: int) -> Degrees:
        raise NotImplementedError

    def check(self, cp: Mapping | CPConfig, shape: ShapeSpec, world: int) -> Degrees:
        deg = self.degrees(self.settings(cp), world)
        if deg.ulysses * deg.ring != world:
            raise ConfigError(
                f"world size {world} != ulysses degree {deg.ulysses} x ring degree {deg.ring} ({self.name})"
            )
        return replace(deg, kv_replicas=check_heads(deg.ulysses, shape))

    def shard(self, cp: Mapping | CPConfig, mask: AttnMask, world: int) -> Shard:
        """How the sequence is cut over the ranks (cp.shard)."""
        return make_shard(self.settings(cp).shard, mask, world)

    def footprint(self, shape: ShapeSpec, seqlen: int, mode: str, world: int, extra: int) -> memory.Footprint:
        """What one rank needs before the mask exists: its share of the step's tensors and the
        global mask's rows (`extra`, the L2 flush buffer, is left to the timing)."""
        local = -(-seqlen // world)
        return memory.Footprint(
            tensors=memory.step_tensors(shape, local, local, mode), mask=memory.mask_rows(None, seqlen)
        )

    def mask_footprint(
        self, kernel: Kernel, mask: AttnMask, shape: ShapeSpec, mode: str, verify: bool, extra: int
    ) -> memory.Footprint | None:
        """What one rank needs once the mask exists; None: nothing more is checked."""
        return None

    def plan(
        self, mask: AttnMask, shard: Shard, topo: Topology, kernel: Kernel, shape: ShapeSpec
    ) -> RankPlan:
        raise NotImplementedError

    def local_inputs(self, glob: StepInputs, plan: RankPlan) -> StepInputs:
        """This rank's share of the global inputs, as fresh leaves."""
        return local_inputs(glob, plan.shard, plan.topo.rank)

    def gather(self, got: dict[str, torch.Tensor], plan: RankPlan) -> dict | None:
        """Every rank's outputs in global token order on rank 0, None elsewhere (collective)."""
        return gather_global(got, plan.shard, plan.shard.seqlen)

    def step_fn(self, plan: RankPlan, ctx: RunCtx) -> AttnFn:
        """The (q, k, v) -> (out, lse) function of this rank that the harness times and verifies."""

        def fn(q, k, v):
            return self.attention(q, k, v, plan, ctx), None

        return fn

    def attention(self, q, k, v, plan: RankPlan, ctx: RunCtx) -> torch.Tensor:
        raise NotImplementedError

    def group_specs(self, topo: Topology) -> dict[str, list[list[int]]]:
        """Named families of rank lists this strategy needs as process groups."""
        return {}

    def process_groups(self, topo: Topology, source: str, device: torch.device) -> dict:
        """This cell's groups by name (collective: every rank calls it, in the same order)."""
        d = topo.deg
        specs = self.group_specs(topo)
        return cell_groups(source, topo.world, d.ulysses, d.ring, topo.intra, device.type, specs)

    def emulated_step(self, plan: RankPlan, glob: StepInputs, mode: str) -> Callable[[], object]:
        """This rank's compute of one step call on one device, communication replaced by local
        copies of the global inputs (cp.emulate)."""
        raise Unsupported(f"{self.name} cannot be emulated on one device (it has no emulated_step)")

    def comm_bytes(self, plan: RankPlan, shape: ShapeSpec, mode: str) -> float:
        """Bytes this rank would send per step call in `mode`, counted from the algorithm."""
        raise Unsupported(f"{self.name} counts no emulated bytes (it has no comm_bytes)")


def check_heads(ulysses: int, shape: ShapeSpec) -> int:
    """Ulysses splits heads: q heads must divide; kv heads divide or are replicated up."""
    if ulysses == 1:
        return 1
    if shape.heads_q % ulysses:
        raise ConfigError(f"ulysses degree {ulysses} does not divide {shape.heads_q} q heads")
    if shape.heads_kv % ulysses == 0:
        return 1
    if ulysses % shape.heads_kv == 0:
        return ulysses // shape.heads_kv
    raise ConfigError(f"ulysses degree {ulysses} does not divide {shape.heads_kv} kv heads")


def full_or_causal_only(mask: AttnMask, strategy: str, why: str = "") -> str:
    """'full' or 'causal' for a peer that takes only those (a flag, no mask), else Unsupported."""
    kind = full_or_causal(mask)
    if kind is None:
        raise Unsupported(f"{strategy} takes only causal/full masks{why}: {mask.name}")
    return kind


def degree(value: int, default: int) -> int:
    return int(value) if int(value) > 0 else default


def mesh_degrees(cp: MeshCPConfig, world: int, strategy: str) -> Degrees:
    """A 2-D (Ulysses x ring) mesh from cp.ulysses_degree / cp.ring_degree; 0 = the rest of the world."""
    u = degree(cp.ulysses_degree, 0)
    r = degree(cp.ring_degree, 0)
    if u == 0 and r == 0:
        raise ConfigError(f"{strategy} needs cp.ulysses_degree or cp.ring_degree")
    if u == 0:
        u = world // r if world % r == 0 else 0
    if r == 0:
        r = world // u if world % u == 0 else 0
    if u * r != world:
        raise ConfigError(f"world size {world} is not ulysses degree {u} x ring degree {r} ({strategy})")
    return Degrees(ulysses=u, ring=r)


class RingOnly:
    """Mixin for strategies whose one dimension is the ring (ring, ring_allgather, torch_ring)."""

    config = RingCPConfig

    def degrees(self, cp: RingCPConfig, world: int) -> Degrees:
        return Degrees(ulysses=1, ring=degree(cp.ring_degree, world))
