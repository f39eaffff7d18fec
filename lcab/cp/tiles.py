"""A rank's step as kernel calls: the global mask on (q runs x k runs), one call on the whole
sub-mask or, where the kernel cannot express it, one per run pair (cut at the diagonal)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from lcab.cp.submask import Run, submask
from lcab.kernels.base import Kernel, ShapeSpec, StepFns, Unsupported, no_steps
from lcab.masks.slices import AttnMask


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
        if not kernel.has_steps(shape.device.type):  # from its capabilities, before any step
            raise Unsupported(no_steps(kernel, shape.device.type))
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
