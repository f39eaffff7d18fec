from lcab.config import MaskConfig
from lcab.masks.registry import register
from lcab.masks.slices import AttnMask, Slice, SliceType


@register("causal")
def causal(cfg: MaskConfig, seqlen: int) -> AttnMask:
    return AttnMask((Slice(0, seqlen, 0, seqlen, SliceType.CAUSAL),), seqlen, seqlen, name="causal")
