"""What flash2, flash3 and flash4 are handed for one CP step, built on CPU and unit-tested there.

A step's sub-mask (local rows x local keys) becomes one varlen call: the finest block-diagonal
cut of its non-empty rows (varlen_args.flash_step_layout) gives sequences whose q and k pieces
differ in length and offset, packed by cu_seqlens_q / cu_seqlens_k, with one bottom-right
window. Rows in no piece see nothing: they are left out of the call and get out 0, lse -inf.

The three libraries spell the same call differently (window_size tuple or two ints, -1 or None
for unbounded, causal or is_causal, lse or softmax_lse); `call_by_name` binds lcab's values to
whatever names the installed function takes, so the adapters differ only in what they import.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lcab.kernels.base import Unsupported
from lcab.kernels.varlen_args import CudnnLayout, batched_starts, flash_step_layout
from lcab.masks.slices import AttnMask


@dataclass(frozen=True)
class Packed:
    """Rows of a [B * S] token buffer that one varlen call takes, in packed order: sequence i
    is tokens [starts[i], + lens[i]). `span` (a, b) when they are exactly tokens a..b-1, so a
    view replaces the gather."""

    starts: tuple[int, ...]
    lens: tuple[int, ...]
    total: int  # B * S, the buffer's length

    @property
    def cu_seqlens(self) -> list[int]:
        out = [0]
        for n in self.lens:
            out.append(out[-1] + n)
        return out

    @property
    def max_len(self) -> int:
        return max(self.lens)

    @property
    def span(self) -> tuple[int, int] | None:
        a = self.starts[0]
        for s, n, s_next in zip(self.starts, self.lens, (*self.starts[1:], None), strict=True):
            if s_next is not None and s + n != s_next:
                return None
        return a, self.starts[-1] + self.lens[-1]

    @property
    def whole(self) -> bool:
        return self.span == (0, self.total)

    def index(self) -> torch.Tensor:
        return torch.cat([torch.arange(s, s + n) for s, n in zip(self.starts, self.lens, strict=True)])


@dataclass(frozen=True)
class FlashStep:
    """One step's varlen call: packed q and k sides, the causal flag and window_size (left,
    right) in flash-attn's convention with `unbounded` for no limit."""

    q: Packed
    k: Packed
    causal: bool
    window: tuple[int | None, int | None]
    unbounded: int | None  # the library's "no limit": -1 (flash-attn 2, 3) or None (4)
    layout: CudnnLayout

    def describe(self) -> str:
        n = len(self.q.lens)
        band = "causal" if self.causal else ("full" if self.window == (self.unbounded,) * 2 else "window")
        return f"varlen x{n}+{band}(bottom_right, window_size={list(self.window)})"


def window_args(left_bound: int | None, right_bound: int | None, unbounded) -> tuple[bool, tuple]:
    """(causal, window_size) from a layout's band bounds; flash-attn's left is the bound - 1."""
    left = unbounded if left_bound is None else int(left_bound) - 1
    right = unbounded if right_bound is None else int(right_bound)
    return right == 0 and left == unbounded, (left, right)


def flash_step(mask: AttnMask, batch: int, unbounded=-1) -> FlashStep:
    """The step's sub-mask as one varlen call (Unsupported from flash_step_layout if it is none)."""
    lay = flash_step_layout(mask)
    q = Packed(
        tuple(batched_starts(lay.q_starts, lay.seqlen_q, batch)), lay.q_lens * batch, batch * lay.seqlen_q
    )
    k = Packed(
        tuple(batched_starts(lay.k_starts, lay.seqlen_k, batch)), lay.k_lens * batch, batch * lay.seqlen_k
    )
    causal, window = window_args(lay.left_bound, lay.right_bound, unbounded)
    return FlashStep(q, k, causal, window, unbounded, lay)


# --- binding lcab's values to a library's parameter names ---------------------------------------

ALIASES = {"is_causal": "causal", "softmax_lse": "lse", "do": "dout"}


def call_by_name(fn: Callable, values: dict):
    """Call `fn` with every parameter it declares that `values` (or an alias) names; required
    parameters not named get None (the optional features: k_new, page_table, rotary, ...)."""
    kwargs = {}
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        key = name if name in values else ALIASES.get(name)
        if key is not None and key in values:
            kwargs[name] = values[key]
        elif p.default is inspect.Parameter.empty:
            kwargs[name] = None
    return fn(**kwargs)


def call_values(step: FlashStep, softmax_scale: float) -> dict:
    """The values every flash generation's varlen forward/backward may ask for, by name."""
    left, right = step.window
    return {
        "cu_seqlens_q": step.q.cu_seqlens,
        "cu_seqlens_k": step.k.cu_seqlens,
        "max_seqlen_q": step.q.max_len,
        "max_seqlen_k": step.k.max_len,
        "softmax_scale": softmax_scale,
        "causal": step.causal,
        "window_size": (left, right),
        "window_size_left": left,
        "window_size_right": right,
        "dropout_p": 0.0,
        "softcap": 0.0,
        "deterministic": False,
        "return_lse": True,
        "return_softmax": False,
    }


def lse_of(result: Sequence, heads: int, tokens: int) -> torch.Tensor:
    """The LSE among a forward's outputs: the first floating [H, T] tensor after `out` (flash-attn
    2 returns (out, lse, S, rng), 3 (out, lse, ...), 4 (out, lse, p, row_max, o_lo))."""
    for x in result[1:]:
        if isinstance(x, torch.Tensor) and x.is_floating_point() and tuple(x.shape) == (heads, tokens):
            return x
    raise RuntimeError(f"no [heads={heads}, tokens={tokens}] LSE among the forward's outputs")


# --- FlashAttention-4's mask_mod: the mask's own row intervals ----------------------------------

MASK_MOD_MAX_INTERVALS = 2  # lcab.kernels.flash4_mask_mod has one function per count up to this
ROW_PAD = 128  # aux tensors cover every row of the last (possibly partial) 128-row tile


@dataclass(frozen=True)
class IntervalForm:
    """Row r sees keys [lo[j][r], hi[j][r]) for each j: the arrays become mask_mod's aux tensors."""

    lo: tuple[np.ndarray, ...]
    hi: tuple[np.ndarray, ...]

    @property
    def intervals(self) -> int:
        return len(self.lo)

    def aux(self) -> list[np.ndarray]:
        """[lo_0, hi_0, lo_1, hi_1, ...], int32, padded with empty rows to a multiple of ROW_PAD."""
        out = []
        for lo, hi in zip(self.lo, self.hi, strict=True):
            for x in (lo, hi):
                n = -(-x.size // ROW_PAD) * ROW_PAD
                out.append(np.pad(x.astype(np.int32), (0, n - x.size)))
        return out


def interval_form(mask: AttnMask, max_intervals: int = MASK_MOD_MAX_INTERVALS) -> IntervalForm:
    """The mask as per-row key intervals for a mask_mod, or Unsupported naming the row that has
    more of them than the mask_mod takes."""
    ri = mask.row_intervals
    used = ri.hi > ri.lo
    counts = used.sum(axis=1)
    if counts.max(initial=0) > max_intervals:
        r = int(np.argmax(counts))
        raise Unsupported(
            f"row {r} of {mask.name} sees {int(counts[r])} disjoint key ranges; the flash4 mask_mod "
            f"takes at most {max_intervals} per row"
        )
    k = max(1, int(counts.max(initial=0)))
    lo = [np.where(used[:, j], ri.lo[:, j], 0) for j in range(k)]
    hi = [np.where(used[:, j], ri.hi[:, j], 0) for j in range(k)]
    return IntervalForm(tuple(lo), tuple(hi))


def fa4_conflict(installed: dict[str, str | None], import_error: str | None) -> str | None:
    """Why flash_attn.cute is not FlashAttention-4, or None. `installed`: distribution -> version
    (None when absent). flash-attn 2's wheel ships an old flash_attn/cute of its own, which
    shadows or breaks flash-attn-4's when both are installed."""
    fa2, fa4 = installed.get("flash-attn"), installed.get("flash-attn-4")
    if fa4 is None:
        extra = f"; flash_attn.cute here is flash-attn {fa2}'s old copy" if fa2 else ""
        return f"flash-attn-4 not installed{extra}"
    if import_error is None:
        return None
    if fa2 is not None:
        return (
            f"flash-attn {fa2} and flash-attn-4 {fa4} both install flash_attn/cute and flash-attn's "
            f"copy breaks FlashAttention-4 ({import_error}): install flash-attn-4 apart from flash-attn"
        )
    return f"flash-attn-4 {fa4} does not import ({import_error})"
