from __future__ import annotations

from typing import TYPE_CHECKING

from lcab.masks.regions import band, check_window
from lcab.masks.registry import register
from lcab.masks.slices import AttnMask

if TYPE_CHECKING:
    from lcab.config import WindowMaskConfig


@register("sliding_window")
def sliding_window(cfg: WindowMaskConfig, seqlen: int) -> AttnMask:
    """|q - k| < w: w - 1 keys on each side plus the diagonal."""
    w = check_window(cfg.window, "sliding_window")
    slices = band(0, seqlen, w - 1, w - 1)
    return AttnMask(tuple(slices), seqlen, seqlen, name="sliding_window", params={"window": w})
