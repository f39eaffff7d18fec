from __future__ import annotations

from typing import TYPE_CHECKING

from lcab.masks.documents import doc_params, sample_doc_lens
from lcab.masks.regions import docs
from lcab.masks.registry import register
from lcab.masks.slices import AttnMask, Slice, SliceType

if TYPE_CHECKING:
    from lcab.config import DocMaskConfig


@register("causal_document")
def causal_document(cfg: DocMaskConfig, seqlen: int) -> AttnMask:
    lens = sample_doc_lens(cfg, seqlen)
    slices = tuple(Slice(s, e, s, e, SliceType.CAUSAL) for s, e in docs(lens))
    return AttnMask(slices, seqlen, seqlen, name="causal_document", params=doc_params(cfg), doc_lens=lens)
