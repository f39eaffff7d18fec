"""The CP strategy contract, the registry, rank topology and per-step tiles.

A strategy
  check(cp, shape, world) -> Degrees    raises ConfigError / Unsupported with one clear line
  plan(mask, shard, topo, kernel, shape) -> RankPlan   everything mask-dependent, outside timing
  attention(q, k, v, plan, ctx) -> out  differentiable; talks only through ctx.comm
Ranks sit on a 2-D mesh (ring x ulysses); with cp.ulysses_intra_node (default) the Ulysses
groups are consecutive ranks (rank = ring_index * U + u), so the all-to-all stays on NVLink.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass, field, replace
from itertools import pairwise

import torch

from lcab.config import ConfigError
from lcab.cp.comm import Comm
from lcab.cp.sharding import Shard
from lcab.cp.submask import Run, submask
from lcab.kernels.base import Kernel, ShapeSpec, StepFns, Unsupported
from lcab.masks.forms import full_or_causal
from lcab.masks.slices import AttnMask


@dataclass(frozen=True)
class Degrees:
    ulysses: int
    ring: int
    kv_replicas: int = 1  # KV heads replicated this many times to reach the Ulysses degree
    windows: int = 1  # double_ring


@dataclass
class Topology:
    """Where this rank sits; groups are torch ProcessGroups (None when emulating)."""

    world: int
    rank: int
    deg: Degrees
    intra: bool = True
    groups: dict = field(default_factory=dict)  # name -> ProcessGroup

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
        return replace(self, rank=rank, groups={})


@dataclass
class Tile:
    """One kernel call: rows [q0, q1) of the local q buffer x rows [k0, k1) of the visiting K/V."""

    q0: int
    q1: int
    k0: int
    k1: int
    fns: StepFns
    area: int


class StepCache:
    """step_fns per distinct sub-mask (full and causal tiles repeat across steps and ranks)."""

    def __init__(self, kernel: Kernel, shape: ShapeSpec) -> None:
        self.kernel, self.shape, self.fns = kernel, shape, {}
        self.forms: set[str] = set()

    def get(self, mask: AttnMask) -> StepFns:
        key = (mask.slices, mask.seqlen_q, mask.seqlen_k)
        if key not in self.fns:
            self.fns[key] = self.kernel.step_fns(mask, self.shape)
            self.forms.add(self.fns[key].form)
        return self.fns[key]


def make_tiles(mask: AttnMask, q_runs: list[Run], k_runs: list[Run], cache: StepCache) -> list[Tile]:
    """The global mask on (q runs x k runs) as kernel calls: one call on the whole sub-mask, or,
    where the kernel cannot express it (e.g. flash takes only full/causal), one per run pair."""
    sm = submask(mask, q_runs, k_runs)
    if sm is None:
        return []
    try:
        return [Tile(sm.q0, sm.q1, sm.k0, sm.k1, cache.get(sm.mask), sm.area)]
    except Unsupported as whole:
        tiles = []
        for qr in q_runs:
            for kr in k_runs:
                try:
                    tiles += _pair_tiles(mask, qr, kr, cache)
                except Unsupported as part:
                    raise Unsupported(
                        f"{cache.kernel.name} cannot run a CP step of {mask.name}: {part}"
                    ) from whole
        return tiles


def _pair_tiles(mask: AttnMask, qr: Run, kr: Run, cache: StepCache) -> list[Tile]:
    """One (q run, k run) pair; if the kernel cannot take it whole, the k run is cut where the q
    run starts and ends (the diagonal), e.g. all-gathered keys against a causal chunk become a
    full block before the chunk and a square causal block on it."""
    s = submask(mask, [qr], [kr])
    if s is None:
        return []
    try:
        return [Tile(s.q0, s.q1, s.k0, s.k1, cache.get(s.mask), s.area)]
    except Unsupported:
        cuts = sorted({c for c in (qr.g0, qr.g1) if kr.g0 < c < kr.g1})
        if not cuts:
            raise
    edges = [kr.g0, *cuts, kr.g1]
    tiles = []
    for a, b in pairwise(edges):
        s = submask(mask, [qr], [Run(a, b, kr.l0 + a - kr.g0)])
        if s is not None:
            tiles.append(Tile(s.q0, s.q1, s.k0, s.k1, cache.get(s.mask), s.area))
    return tiles


class ComputeTimer:
    """Sums the time of the kernel calls of a step (CUDA events on GPU, wall clock on CPU)."""

    def __init__(self, device: torch.device, enabled: bool = False) -> None:
        self.device, self.enabled = device, enabled
        self.cpu_s = 0.0
        self.events: list = []
        self._t0 = 0.0

    def __enter__(self):
        if self.enabled:
            if self.device.type == "cuda":
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                self.events.append([e, None])
            else:
                self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                self.events[-1][1] = e
            else:
                self.cpu_s += time.perf_counter() - self._t0

    def total_ms(self) -> float:
        if self.device.type == "cuda" and self.events:
            torch.cuda.synchronize(self.device)
            return sum(a.elapsed_time(b) for a, b in self.events)
        return self.cpu_s * 1e3

    def reset(self) -> None:
        self.cpu_s, self.events = 0.0, []


@dataclass
class RunCtx:
    """What attention() needs besides tensors: the comm wrapper and the compute timer."""

    comm: Comm
    timer: ComputeTimer


@dataclass
class RankPlan:
    shard: Shard
    topo: Topology
    heads_q: int  # per rank after the Ulysses split
    heads_kv: int
    steps: list = field(default_factory=list)  # strategy-specific per-step data
    area: float = 0.0  # visible (q, k) pairs this rank computes, in units of all heads
    notes: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


class Strategy:
    name: str = ""
    summary: str = ""

    def degrees(self, cp: dict, world: int) -> Degrees:
        raise NotImplementedError

    def check(self, cp: dict, shape: ShapeSpec, world: int) -> Degrees:
        deg = self.degrees(cp, world)
        if deg.ulysses * deg.ring != world:
            raise ConfigError(
                f"world size {world} != ulysses degree {deg.ulysses} x ring degree {deg.ring} ({self.name})"
            )
        return replace(deg, kv_replicas=check_heads(deg.ulysses, shape))

    def plan(
        self, mask: AttnMask, shard: Shard, topo: Topology, kernel: Kernel, shape: ShapeSpec
    ) -> RankPlan:
        raise NotImplementedError

    def attention(self, q, k, v, plan: RankPlan, ctx: RunCtx) -> torch.Tensor:
        raise NotImplementedError

    def group_specs(self, topo: Topology) -> dict[str, list[list[int]]]:
        """Named families of rank lists this strategy needs as process groups."""
        return {}


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


_STRATEGIES: dict[str, Strategy] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    _STRATEGIES[cls.name] = cls()
    return cls


def _load() -> None:
    from lcab import cp

    skip = {"base", "comm", "merge", "sharding", "submask", "groups", "execute_cp", "emulate", "__init__"}
    for mod in pkgutil.iter_modules(cp.__path__):
        if mod.name not in skip:
            importlib.import_module(f"{cp.__name__}.{mod.name}")


def get(name: str) -> Strategy:
    _load()
    if name not in _STRATEGIES:
        raise ConfigError(f"unknown cp strategy '{name}'; known: {', '.join(sorted(_STRATEGIES))}")
    return _STRATEGIES[name]


def names() -> list[str]:
    _load()
    return sorted(_STRATEGIES)
