"""Kernel-facing forms derived from a mask's rows, never from its name.

A kernel that takes "full", "causal" or packed documents plus a window (SDPA is_causal,
flash-attn varlen, cuDNN ragged) asks here whether the mask IS one of those, and gets the
exact arguments or a reason why not, so it can report "unsupported: <reason>" instead of
silently running a different mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lcab.masks.slices import AttnMask


def is_full(mask: AttnMask) -> bool:
    """Every (q, k) pair is visible."""
    return mask.area == mask.seqlen_q * mask.seqlen_k


def full_or_causal(mask: AttnMask) -> str | None:
    """'full' or 'causal' where the whole square mask is exactly that (the flag-only APIs), else None."""
    if mask.seqlen_q != mask.seqlen_k:
        return None
    if is_full(mask):
        return "full"
    return "causal" if is_causal(mask) else None


def is_causal(mask: AttnMask) -> bool:
    """Square, and row q sees exactly keys [0, q]."""
    if mask.seqlen_q != mask.seqlen_k:
        return False
    ri = mask.row_intervals
    q = np.arange(mask.seqlen_q, dtype=np.int64)
    widths = (ri.hi - ri.lo).sum(axis=1)
    return bool(np.all(ri.lo[:, 0] == 0) and np.all(ri.hi[:, 0] == q + 1) and np.all(widths == q + 1))


def _tri(x: np.ndarray) -> np.ndarray:
    """1 + 2 + ... + x, 0 for x <= 0."""
    x = np.maximum(x, 0)
    return x * (x + 1) // 2


@dataclass(frozen=True)
class VarlenForm:
    """Packed documents with one window rule, in flash-attn's terms.

    Inside the document containing both, query i sees key j iff
    i - window_left <= j <= i + window_right (-1 = unbounded on that side), and j <= i if
    causal; causal forms always carry window_right == 0. No pair across documents is visible.
    """

    cu_seqlens: tuple[int, ...]  # document starts, incl. 0 and S
    causal: bool
    window_left: int
    window_right: int

    @property
    def doc_lens(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.diff(self.cu_seqlens))

    @property
    def max_seqlen(self) -> int:
        return max(self.doc_lens)

    @property
    def seqlen(self) -> int:
        return self.cu_seqlens[-1]

    @property
    def has_window(self) -> bool:
        """A finite window beyond what causal alone implies (kernels without windows refuse it)."""
        return self.window_left >= 0 or (self.window_right >= 0 and not self.causal)

    def area(self) -> int:
        """Visible pairs by a closed formula per document, independent of the slices."""
        n = np.diff(np.asarray(self.cu_seqlens, dtype=np.int64))
        left = n - 1 if self.window_left < 0 else np.minimum(self.window_left, n - 1)
        right = (
            np.zeros_like(n)
            if self.causal
            else (n - 1 if self.window_right < 0 else np.minimum(self.window_right, n - 1))
        )
        # Row i sees [max(0, i - left), min(n - 1, i + right)]: sum the upper ends + 1, minus the
        # lower ends, each a linear sum corrected by the clipped triangle at one end.
        upper = n * (n - 1) // 2 + n * (right + 1) - _tri(right)
        lower = _tri(n - 1 - left)
        return int((upper - lower).sum())

    def cu_seqlens_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.tensor(self.cu_seqlens, dtype=torch.int32, device=device)


def _derive(mask: AttnMask) -> tuple[VarlenForm | None, str]:
    if mask.seqlen_q != mask.seqlen_k:
        return None, f"seqlen_q {mask.seqlen_q} != seqlen_k {mask.seqlen_k}"
    s = mask.seqlen_q
    ri = mask.row_intervals
    if ri.max_intervals > 1:
        multi = np.nonzero((ri.hi[:, 1:] > ri.lo[:, 1:]).any(axis=1))[0]
        r = int(multi[0])
        n_int = int((ri.hi[r] > ri.lo[r]).sum())
        return None, f"row {r} sees {n_int} disjoint key ranges; varlen needs one per row"
    lo, hi = ri.lo[:, 0], ri.hi[:, 0]
    q = np.arange(s, dtype=np.int64)
    # p is a document boundary iff no row at or after p sees a key before p and no row before
    # p sees a key at or after p.
    suffix_min_lo = np.minimum.accumulate(lo[::-1])[::-1]
    prefix_max_hi = np.maximum.accumulate(hi)
    p = np.arange(1, s)
    inner = p[(suffix_min_lo[1:] >= p) & (prefix_max_hi[:-1] <= p)]
    cu = np.concatenate([[0], inner, [s]]).astype(np.int64)
    doc = np.searchsorted(cu, q, side="right") - 1
    start, end = cu[doc], cu[doc + 1]
    # Window sizes from the rows whose edge is not the document edge; they must all agree,
    # which the exact comparison below checks.
    left_d = (q - lo)[lo > start]
    right_d = (hi - 1 - q)[hi < end]
    if np.any(left_d < 0) or np.any(right_d < 0):
        r = int(np.nonzero((lo > q) | (hi <= q))[0][0])
        return None, f"row {r} does not see its own position (key range [{lo[r]}, {hi[r]}))"
    left = int(left_d.max()) if left_d.size else -1
    right = int(right_d.max()) if right_d.size else -1
    pred_lo = start if left < 0 else np.maximum(start, q - left)
    pred_hi = end if right < 0 else np.minimum(end, q + right + 1)
    bad = np.nonzero((pred_lo != lo) | (pred_hi != hi))[0]
    if bad.size:
        r = int(bad[0])
        return None, (
            f"not packed documents with one window: row {r} sees keys [{lo[r]}, {hi[r]}), while "
            f"docs + window (left={left}, right={right}) predict [{pred_lo[r]}, {pred_hi[r]})"
        )
    form = VarlenForm(tuple(int(x) for x in cu), causal=right == 0, window_left=left, window_right=right)
    return form, ""


def varlen_form(mask: AttnMask) -> VarlenForm | None:
    """The mask as packed documents + one flash-attn window, or None (see why_not_varlen)."""
    return _derive(mask)[0]


def why_not_varlen(mask: AttnMask) -> str:
    """'' when varlen_form(mask) exists, else one line saying why it does not."""
    return _derive(mask)[1]
