from __future__ import annotations

from typing import TYPE_CHECKING

from lcab.masks.documents import sample_block_docs
from lcab.masks.regions import docs
from lcab.masks.registry import register
from lcab.masks.slices import AttnMask, Slice, SliceType

if TYPE_CHECKING:
    from lcab.config import BlockDocMaskConfig


@register("block_causal_document")
def block_causal_document(cfg: BlockDocMaskConfig, seqlen: int) -> AttnMask:
    """Docs of 1..max_blocks_per_doc whole blocks (block-aligned from 0; the last doc and block
    may be cut at S); a query block sees its doc from the doc start to its own block end
    (causal at block granularity, as in blockwise video/AR-diffusion training)."""
    lens = sample_block_docs(cfg, seqlen)
    b = cfg.block
    slices = []
    for s, e in docs(lens):
        for q0 in range(s, e, b):
            q1 = min(q0 + b, e)
            slices.append(Slice(q0, q1, s, q1, SliceType.FULL))
    params = {"block": b, "max_blocks_per_doc": cfg.max_blocks_per_doc, "seed": cfg.seed}
    return AttnMask(tuple(slices), seqlen, seqlen, name="block_causal_document", params=params, doc_lens=lens)
