from __future__ import annotations

from typing import TYPE_CHECKING

from lcab.masks.registry import register
from lcab.masks.slices import AttnMask, Slice, SliceType

if TYPE_CHECKING:
    from lcab.config import PrefixMaskConfig


def prefix_len(frac: float, n: int) -> int:
    """round(frac * n) (Python's round: ties to even), clipped to [0, n]."""
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"prefix must be a fraction in [0, 1], got {frac}")
    return min(n, max(0, round(frac * n)))


def prefix_lm_slices(s: int, e: int, p: int) -> list[Slice]:
    """Rows [s, s+p) see the prefix fully; rows [s+p, e) see [s, q] (causal, bottom-right aligned)."""
    out = []
    if p > 0:
        out.append(Slice(s, s + p, s, s + p, SliceType.FULL))
    if s + p < e:
        out.append(Slice(s + p, e, s, e, SliceType.CAUSAL))
    return out


@register("prefix_lm_causal")
def prefix_lm_causal(cfg: PrefixMaskConfig, seqlen: int) -> AttnMask:
    p = prefix_len(cfg.prefix, seqlen)
    return AttnMask(
        tuple(prefix_lm_slices(0, seqlen, p)),
        seqlen,
        seqlen,
        name="prefix_lm_causal",
        params={"prefix": cfg.prefix, "prefix_len": p},
    )
