"""The part of a global mask that one rank computes in one step, in that rank's local coordinates.

A rank's tokens are a list of runs (global [g0, g1) placed at local offset l0; zigzag and
per-document layouts give several runs). The sub-mask of (q runs x k runs) is the global mask's
per-row key intervals clipped to each k run and shifted to local coordinates, cut back into
slices: within a run of rows where both interval ends move by 0 or 1 per row the region is
exactly one slice (full, causal, inv_causal or bi_causal), so the sub-mask is exact by
construction and has the same area as the global mask restricted to those tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lcab.masks.slices import AttnMask, Slice

_TYPES = {(0, 0): "full", (0, 1): "causal", (1, 0): "inv_causal", (1, 1): "bi_causal"}


@dataclass(frozen=True)
class Run:
    """Global tokens [g0, g1) at local positions [l0, l0 + g1 - g0)."""

    g0: int
    g1: int
    l0: int

    @property
    def n(self) -> int:
        return self.g1 - self.g0


def runs_from_ranges(ranges: list[tuple[int, int]]) -> list[Run]:
    """Ranges in local order -> runs placed back to back (adjacent ranges merged)."""
    out: list[Run] = []
    pos = 0
    for g0, g1 in ranges:
        if g1 <= g0:
            continue
        if out and out[-1].g1 == g0:
            last = out.pop()
            out.append(Run(last.g0, g1, last.l0))
        else:
            out.append(Run(g0, g1, pos))
        pos += g1 - g0
    return out


def _slices_from_intervals(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[Slice]:
    """Rows (increasing, local) with one non-empty interval each -> exact slices."""
    out: list[Slice] = []
    if rows.size == 0:
        return out
    # Break where rows are not consecutive or where an end moves by something other than 0/1,
    # or where the (dlo, dhi) pattern changes.
    n = rows.size
    start = 0
    while start < n:
        end = start + 1
        code = None
        while end < n:
            if rows[end] != rows[end - 1] + 1:
                break
            dlo, dhi = lo[end] - lo[end - 1], hi[end] - hi[end - 1]
            if dlo not in (0, 1) or dhi not in (0, 1):
                break
            c = (int(dlo), int(dhi))
            if code is None:
                code = c
            elif c != code:
                break
            end += 1
        typ = _TYPES[code or (0, 0)]
        r0, r1 = int(rows[start]), int(rows[end - 1]) + 1
        k0 = int(lo[start])
        k1 = int(hi[end - 1]) if typ in ("causal", "bi_causal") else int(hi[start])
        out.append(Slice(r0, r1, k0, k1, typ))
        start = end
    return out


def _segments(rows, lo, hi) -> list[Slice]:
    """Cut at the steps no slice can span (vectorised), then scan each piece exactly."""
    if rows.size == 0:
        return []
    dlo, dhi, drow = np.diff(lo), np.diff(hi), np.diff(rows)
    ok = (drow == 1) & ((dlo == 0) | (dlo == 1)) & ((dhi == 0) | (dhi == 1))
    cuts = np.nonzero(~ok)[0] + 1
    out: list[Slice] = []
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, rows.size], strict=True):
        out.extend(_slices_from_intervals(rows[a:b], lo[a:b], hi[a:b]))
    return out


@dataclass(frozen=True)
class SubMask:
    """A sub-mask trimmed to its bounding box: rows [q0, q1) x keys [k0, k1) of the local buffers."""

    mask: AttnMask
    q0: int
    q1: int
    k0: int
    k1: int

    @property
    def area(self) -> int:
        return self.mask.area


def submask(
    mask: AttnMask, q_runs: list[Run], k_runs: list[Run], name: str = "", trim: bool = True
) -> SubMask | None:
    """The global mask on (q runs x k runs) in local coordinates; None when nothing is visible."""
    ri = mask.row_intervals
    slices: list[Slice] = []
    for qr in q_runs:
        lo_g, hi_g = ri.lo[qr.g0 : qr.g1], ri.hi[qr.g0 : qr.g1]
        nonempty = hi_g > lo_g
        if not nonempty.any():
            continue
        row_min = int(lo_g[nonempty].min())
        row_max = int(hi_g[nonempty].max())
        for kr in k_runs:
            if kr.g1 <= row_min or kr.g0 >= row_max:
                continue
            lo = np.clip(lo_g, kr.g0, kr.g1)
            hi = np.clip(hi_g, kr.g0, kr.g1)
            for j in range(lo.shape[1]):
                keep = hi[:, j] > lo[:, j]
                if not keep.any():
                    continue
                rows = np.nonzero(keep)[0]
                slices.extend(
                    Slice(s.q0 + qr.l0, s.q1 + qr.l0, s.k0 - kr.g0 + kr.l0, s.k1 - kr.g0 + kr.l0, s.type)
                    for s in _segments(rows, lo[rows, j], hi[rows, j])
                )
    if not slices:
        return None
    sq = max(r.l0 + r.n for r in q_runs)
    sk = max(r.l0 + r.n for r in k_runs)
    q0, q1 = (min(s.q0 for s in slices), max(s.q1 for s in slices)) if trim else (0, sq)
    k0, k1 = (min(s.k0 for s in slices), max(s.k1 for s in slices)) if trim else (0, sk)
    local = tuple(Slice(s.q0 - q0, s.q1 - q0, s.k0 - k0, s.k1 - k0, s.type) for s in slices)
    return SubMask(AttnMask(local, q1 - q0, k1 - k0, name=name or f"{mask.name}[sub]"), q0, q1, k0, k1)
