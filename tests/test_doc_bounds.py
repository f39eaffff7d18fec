"""Document sampling rejects what would run for hours or mean nothing (issue 13, item 9):
a negative or zero max_doc_frac (1-token documents), and more documents than MAX_DOCS."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lcab.config import BlockDocMaskConfig, DocMaskConfig
from lcab.masks.documents import MAX_DOCS, sample_block_docs, sample_doc_lens

CFG = DocMaskConfig(name="causal_document")


@pytest.mark.parametrize("frac", [-1.0, 0.0, 1.5])
def test_max_doc_frac_outside_0_1_is_rejected(frac):
    with pytest.raises(ValueError, match="max_doc_frac must be in"):
        sample_doc_lens(replace(CFG, max_doc_frac=frac), 64)


def test_more_documents_than_the_bound_is_an_error_not_a_hang():
    # 1-token blocks: one document per token, twice the bound; without it 4M loop turns, no error
    cfg = BlockDocMaskConfig(name="block_causal_document", block=1, max_blocks_per_doc=1)
    with pytest.raises(ValueError, match=f"more than {MAX_DOCS} documents"):
        sample_block_docs(cfg, 2 * MAX_DOCS)


def test_the_longest_sequence_with_the_default_table_is_within_the_bound():
    """2^31 - 1 tokens (parse_seqlen's limit) of the default table: about a million documents."""
    lens = sample_doc_lens(CFG, 2**31 - 1)
    assert sum(lens) == 2**31 - 1 and len(lens) < MAX_DOCS
