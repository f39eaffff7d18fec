from __future__ import annotations

from typing import TYPE_CHECKING

from lcab.masks.regions import band, check_window
from lcab.masks.registry import register
from lcab.masks.slices import AttnMask, Slice, SliceType

if TYPE_CHECKING:
    from lcab.config import WindowMaskConfig


@register("global_sliding_window")
def global_sliding_window(cfg: WindowMaskConfig, seqlen: int) -> AttnMask:
    """Longformer-style: the first g = min(w, S) tokens are global (they see every key and every
    query sees them); elsewhere |q - k| < w. Rows [g, S) get the global keys as one full slice
    and the window as a band over the disjoint key range [g, S)."""
    w = check_window(cfg.window, "global_sliding_window")
    g = min(w, seqlen)
    slices = [Slice(0, g, 0, seqlen, SliceType.FULL)]
    if g < seqlen:
        slices.append(Slice(g, seqlen, 0, g, SliceType.FULL))
        slices += band(g, seqlen, w - 1, w - 1)
    return AttnMask(
        tuple(slices), seqlen, seqlen, name="global_sliding_window", params={"window": w, "global": g}
    )
