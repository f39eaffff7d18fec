from __future__ import annotations

from typing import TYPE_CHECKING

from lcab.masks.documents import doc_params, sample_doc_lens
from lcab.masks.regions import docs
from lcab.masks.registry import register
from lcab.masks.slices import AttnMask, Slice, SliceType

if TYPE_CHECKING:
    from lcab.config import DocMaskConfig


@register("share_question")
def share_question(cfg: DocMaskConfig, seqlen: int) -> AttnMask:
    """doc0 is a shared question, later docs are answers to it (reward-model / GRPO packing):
    question + first answer form one causal block; every later answer sees the whole question
    and itself causally, but not the other answers."""
    lens = sample_doc_lens(cfg, seqlen)
    spans = docs(lens)
    q_end = spans[0][1]
    first_end = spans[min(1, len(spans) - 1)][1]
    slices = [Slice(0, first_end, 0, first_end, SliceType.CAUSAL)]
    for s, e in spans[2:]:
        slices.append(Slice(s, e, 0, q_end, SliceType.FULL))
        slices.append(Slice(s, e, s, e, SliceType.CAUSAL))
    return AttnMask(
        tuple(slices), seqlen, seqlen, name="share_question", params=doc_params(cfg), doc_lens=lens
    )
