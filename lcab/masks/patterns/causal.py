from __future__ import annotations

from typing import TYPE_CHECKING

from lcab.masks.registry import register
from lcab.masks.slices import AttnMask, Slice, SliceType

if TYPE_CHECKING:
    from lcab.config import MaskConfig


@register("causal")
def causal(cfg: MaskConfig, seqlen: int) -> AttnMask:
    return AttnMask((Slice(0, seqlen, 0, seqlen, SliceType.CAUSAL),), seqlen, seqlen, name="causal")
