from __future__ import annotations

from typing import TYPE_CHECKING

from lcab.masks.documents import doc_params, sample_doc_lens
from lcab.masks.patterns.prefix_lm_causal import prefix_len, prefix_lm_slices
from lcab.masks.regions import docs
from lcab.masks.registry import register
from lcab.masks.slices import AttnMask

if TYPE_CHECKING:
    from lcab.config import PrefixDocMaskConfig


@register("prefix_lm_document")
def prefix_lm_document(cfg: PrefixDocMaskConfig, seqlen: int) -> AttnMask:
    """Each doc: a full prefix of round(prefix * len) tokens, then causal over the doc."""
    lens = sample_doc_lens(cfg, seqlen)
    slices = [sl for s, e in docs(lens) for sl in prefix_lm_slices(s, e, prefix_len(cfg.prefix, e - s))]
    return AttnMask(
        tuple(slices),
        seqlen,
        seqlen,
        name="prefix_lm_document",
        params={"prefix": cfg.prefix, **doc_params(cfg)},
        doc_lens=lens,
    )
