from __future__ import annotations

from typing import TYPE_CHECKING

from lcab.masks.regions import band, check_window
from lcab.masks.registry import register
from lcab.masks.slices import AttnMask

if TYPE_CHECKING:
    from lcab.config import WindowMaskConfig


@register("sliding_window_causal")
def sliding_window_causal(cfg: WindowMaskConfig, seqlen: int) -> AttnMask:
    """0 <= q - k < w: the diagonal and w - 1 keys before it."""
    w = check_window(cfg.window, "sliding_window_causal")
    slices = band(0, seqlen, w - 1, 0)
    return AttnMask(tuple(slices), seqlen, seqlen, name="sliding_window_causal", params={"window": w})
