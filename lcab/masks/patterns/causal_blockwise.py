from __future__ import annotations

from typing import TYPE_CHECKING

from lcab.masks.documents import doc_params, sample_doc_lens
from lcab.masks.regions import docs
from lcab.masks.registry import register
from lcab.masks.slices import AttnMask, Slice, SliceType

if TYPE_CHECKING:
    from lcab.config import DocMaskConfig


@register("causal_blockwise")
def causal_blockwise(cfg: DocMaskConfig, seqlen: int) -> AttnMask:
    """Causal within each doc; the last doc also sees every earlier token (in-context examples
    followed by the query). Its rows are one bottom-right-aligned causal slice over [0, S)."""
    lens = sample_doc_lens(cfg, seqlen)
    spans = docs(lens)
    slices = [Slice(s, e, s, e, SliceType.CAUSAL) for s, e in spans[:-1]]
    slices.append(Slice(spans[-1][0], seqlen, 0, seqlen, SliceType.CAUSAL))
    return AttnMask(
        tuple(slices), seqlen, seqlen, name="causal_blockwise", params=doc_params(cfg), doc_lens=lens
    )
