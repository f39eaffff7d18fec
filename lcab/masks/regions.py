"""Building blocks that patterns compose: windowed bands over diagonal blocks, document layouts.

Every helper returns non-overlapping slices, so a pattern that places them on disjoint
row ranges (or disjoint key ranges of the same rows) stays non-overlapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from lcab.masks.slices import Slice, SliceType


def band(a: int, b: int, left: int | None, right: int | None) -> list[Slice]:
    """Query q in [a, b) sees key k in [a, b) iff q - left <= k <= q + right (None = unbounded).

    The region's lower edge is either the block edge (constant) or the diagonal q - left, and
    likewise the upper edge; the rows split into at most three runs where each edge is one
    or the other, and each run is exactly one slice type:
      head   lower edge = a, upper edge diagonal        -> causal
      middle both diagonal -> bi_causal, both edges    -> full
      tail   lower edge diagonal, upper edge = b        -> inv_causal
    """
    n = b - a
    if n <= 0:
        return []
    lft = n - 1 if left is None else min(left, n - 1)
    rgt = n - 1 if right is None else min(right, n - 1)
    if lft < 0 or rgt < 0:
        raise ValueError(f"band windows must be >= 0, got left={left} right={right}")
    if lft == n - 1 and rgt == n - 1:
        return [Slice(a, b, a, b, SliceType.FULL)]
    if lft == n - 1 and rgt == 0:
        return [Slice(a, b, a, b, SliceType.CAUSAL)]
    # Local rows i <= lft have the lower edge clipped at 0; rows i >= n - rgt the upper at n.
    x, y = min(lft + 1, n - rgt), max(lft + 1, n - rgt)
    out = []
    if x > 0:
        out.append(Slice(a, a + x, a, a + x + rgt, SliceType.CAUSAL))
    if y > x:
        if lft + 1 <= n - rgt:
            out.append(Slice(a + x, a + y, a + x - lft, a + y + rgt, SliceType.BI_CAUSAL))
        else:
            out.append(Slice(a + x, a + y, a, b, SliceType.FULL))
    if y < n:
        out.append(Slice(a + y, b, a + y - lft, b, SliceType.INV_CAUSAL))
    return out


def bounds(doc_lens: Sequence[int]) -> np.ndarray:
    """cu_seqlens-style boundaries [0, d0, d0+d1, ..., S] as int64."""
    return np.concatenate([[0], np.cumsum(np.asarray(doc_lens, dtype=np.int64))])


def docs(doc_lens: Sequence[int]) -> list[tuple[int, int]]:
    """(start, end) of each document."""
    cu = bounds(doc_lens).tolist()
    return list(pairwise(cu))


def check_window(w: int, name: str) -> int:
    if w < 1:
        raise ValueError(f"mask {name}: window must be >= 1, got {w}")
    return int(w)
