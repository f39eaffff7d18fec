"""The one mask representation: a list of (q range, k range, type) slices.

Every other form a kernel consumes (dense boolean mask, per-row key intervals, Flex
BlockMask, varlen cu_seqlens + window) is derived from the slices, so all of them agree
on the visible area by construction and are checked against each other in the tests.

Slice types follow MagiAttention's convention, inside one slice of m rows x n columns
with local row i and local column j:
  full        every (i, j)
  causal      j <= i + (n - m)          bottom-right aligned
  inv_causal  j >= i                    top-left aligned
  bi_causal   i <= j <= i + (n - m)     both: a band
Slices of one mask must not overlap; the area is then the sum of the slices' areas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

import numpy as np
import torch


class SliceType(str, Enum):
    FULL = "full"
    CAUSAL = "causal"
    INV_CAUSAL = "inv_causal"
    BI_CAUSAL = "bi_causal"


@dataclass(frozen=True)
class Slice:
    q0: int
    q1: int
    k0: int
    k1: int
    type: SliceType = SliceType.FULL

    def __post_init__(self) -> None:
        if not (0 <= self.q0 < self.q1 and 0 <= self.k0 < self.k1):
            raise ValueError(f"empty or negative slice {self}")
        object.__setattr__(self, "type", SliceType(self.type))

    @property
    def rows(self) -> int:
        return self.q1 - self.q0

    @property
    def cols(self) -> int:
        return self.k1 - self.k0

    def row_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row of the slice, the visible absolute key interval [lo, hi) (may be empty)."""
        m, n = self.rows, self.cols
        i = np.arange(m, dtype=np.int64)
        lo = np.zeros(m, dtype=np.int64)
        hi = np.full(m, n, dtype=np.int64)
        if self.type in (SliceType.CAUSAL, SliceType.BI_CAUSAL):
            hi = np.minimum(hi, i + (n - m) + 1)
        if self.type in (SliceType.INV_CAUSAL, SliceType.BI_CAUSAL):
            lo = np.maximum(lo, i)
        hi = np.maximum(hi, lo)  # empty rows have hi == lo
        return lo + self.k0, hi + self.k0

    def area(self) -> int:
        """Closed form of the sum of row_bounds widths (block sparse masks have 1e5+ slices).

        causal and inv_causal are mirror images: T(n) - T(max(n - m, 0)), T(x) = x(x+1)/2;
        bi_causal rows all have n - m + 1 keys, or none when n < m.
        """
        m, n = self.rows, self.cols
        if self.type == SliceType.FULL:
            return m * n
        if self.type == SliceType.BI_CAUSAL:
            return m * (n - m + 1) if n >= m else 0
        d = max(n - m, 0)
        return n * (n + 1) // 2 - d * (d + 1) // 2


@dataclass(frozen=True)
class RowIntervals:
    """Per query row, up to K disjoint sorted key intervals [lo, hi); padded with lo == hi."""

    lo: np.ndarray  # [S_q, K] int64
    hi: np.ndarray  # [S_q, K] int64

    @property
    def max_intervals(self) -> int:
        return self.lo.shape[1]

    def area(self) -> int:
        return int((self.hi - self.lo).sum())


@dataclass(frozen=True)
class AttnMask:
    """A mask over seqlen_q x seqlen_k, with the generator's name and parameters for the record."""

    slices: tuple[Slice, ...]
    seqlen_q: int
    seqlen_k: int
    name: str = "custom"
    params: dict = field(default_factory=dict, compare=False)
    # Document lengths where the pattern is built from packed documents (for the record and
    # for per-document sharding); the slices alone define visibility.
    doc_lens: tuple[int, ...] | None = None
    # Block size where every slice is a full, block-aligned tile (block sparse masks).
    tile: int | None = None

    def __post_init__(self) -> None:
        for s in self.slices:
            if s.q1 > self.seqlen_q or s.k1 > self.seqlen_k:
                raise ValueError(f"slice {s} exceeds mask {self.seqlen_q}x{self.seqlen_k}")

    @cached_property
    def area(self) -> int:
        """Exact number of visible (q, k) pairs."""
        return sum(s.area() for s in self.slices)

    @property
    def density(self) -> float:
        return self.area / (self.seqlen_q * self.seqlen_k)

    def dense(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean [S_q, S_k] mask, True = visible. Memory is S_q * S_k bytes."""
        ri = self.row_intervals
        k = torch.arange(self.seqlen_k, device=device)
        lo = torch.from_numpy(ri.lo).to(device)
        hi = torch.from_numpy(ri.hi).to(device)
        out = torch.zeros(self.seqlen_q, self.seqlen_k, dtype=torch.bool, device=device)
        for j in range(ri.max_intervals):
            out |= (k[None, :] >= lo[:, j, None]) & (k[None, :] < hi[:, j, None])
        return out

    @cached_property
    def row_intervals(self) -> RowIntervals:
        """Merge every slice's per-row interval into disjoint sorted intervals per row."""
        rows, los, his = [], [], []
        for s in self.slices:
            lo, hi = s.row_bounds()
            keep = hi > lo
            rows.append(np.arange(s.q0, s.q1, dtype=np.int64)[keep])
            los.append(lo[keep])
            his.append(hi[keep])
        if not rows:
            z = np.zeros((self.seqlen_q, 1), dtype=np.int64)
            return RowIntervals(z, z.copy())
        row = np.concatenate(rows)
        lo = np.concatenate(los)
        hi = np.concatenate(his)
        order = np.lexsort((lo, row))
        row, lo, hi = row[order], lo[order], hi[order]
        # A new interval starts where the row changes or there is a gap to the previous one.
        # Slices must not overlap, so touching intervals (hi == next lo) merge exactly.
        new_row = np.r_[True, row[1:] != row[:-1]]
        starts = new_row | np.r_[True, lo[1:] > hi[:-1]]
        if np.any(~new_row & (np.r_[False, lo[1:] < hi[:-1]])):
            raise ValueError(f"mask {self.name}: slices overlap")
        group = np.cumsum(starts) - 1
        g_row = row[starts]
        g_lo = lo[starts]
        g_hi = np.zeros(len(g_row), dtype=np.int64)
        np.maximum.at(g_hi, group, hi)
        # Position of each merged interval within its row.
        first_of_row = np.r_[True, g_row[1:] != g_row[:-1]]
        row_start_idx = np.maximum.accumulate(np.where(first_of_row, np.arange(len(g_row)), 0))
        slot = np.arange(len(g_row)) - row_start_idx
        k_max = int(slot.max()) + 1
        out_lo = np.zeros((self.seqlen_q, k_max), dtype=np.int64)
        out_hi = np.zeros((self.seqlen_q, k_max), dtype=np.int64)
        out_lo[g_row, slot] = g_lo
        out_hi[g_row, slot] = g_hi
        return RowIntervals(out_lo, out_hi)

    def describe(self) -> str:
        return f"{self.name} S={self.seqlen_q} slices={len(self.slices)} density={self.density:.4f}"
