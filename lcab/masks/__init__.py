"""Mask patterns as slice lists, and every kernel-facing form derived from them.

mask = build(cfg.mask, seqlen)        # AttnMask: slices + name/params/doc_lens/tile
varlen_form(mask) / why_not_varlen()  # packed docs + flash-attn window, or the reason not
is_full(mask), is_causal(mask)        # SDPA fast paths, decided from the rows
lcab.masks.flex.block_mask(mask, 128, device)   # Flex BlockMask (cached); imported lazily
"""

from lcab.masks.forms import VarlenForm, is_causal, is_full, varlen_form, why_not_varlen
from lcab.masks.registry import build, names, register
from lcab.masks.slices import AttnMask, RowIntervals, Slice, SliceType

__all__ = [
    "AttnMask",
    "RowIntervals",
    "Slice",
    "SliceType",
    "VarlenForm",
    "build",
    "is_causal",
    "is_full",
    "names",
    "register",
    "varlen_form",
    "why_not_varlen",
]
