"""The arguments the GPU adapters hand to flash-attn and cuDNN, checked on CPU: exact values on
hand-computed cases, and the documented window semantics of each library expanded back to a
dense mask, which must equal AttnMask.dense() for every pattern that has a varlen form."""

from __future__ import annotations

import pytest
import torch

from lcab.config import mask_config
from lcab.kernels.base import Unsupported
from lcab.kernels.varlen_args import (
    batched_doc_lens,
    bshd_dims,
    cu_seqlens,
    cu_seqlens_tensor,
    cudnn_band,
    cudnn_visible,
    express,
    flash_visible,
    flash_window,
    from_thd,
    lse_from_packed,
    lse_from_padded,
    padded_positions,
    ragged_offsets,
    round_up,
    seq_lens_tensor,
    thd_dims,
    to_thd,
)
from lcab.masks import build, names


def small_mask(name: str, seqlen: int):
    cfg = mask_config(dict(name=name, window=8, block=16, max_blocks_per_doc=3, sparse_block=16, seed=3))
    return build(cfg, seqlen)


def test_cu_seqlens_hand_computed():
    assert cu_seqlens([3, 5, 2]) == [0, 3, 8, 10]
    t = cu_seqlens_tensor([3, 5, 2])
    assert t.dtype == torch.int32 and t.tolist() == [0, 3, 8, 10]
    assert batched_doc_lens([3, 5, 2], 2) == (3, 5, 2, 3, 5, 2)
    assert cu_seqlens(batched_doc_lens([3, 5, 2], 2)) == [0, 3, 8, 10, 13, 18, 20]
    with pytest.raises(ValueError):
        cu_seqlens([3, 0])


def test_ragged_offsets_are_elements_of_the_packed_tensor():
    off = ragged_offsets([3, 5, 2], heads=4, head_dim=8)
    assert off.shape == (4, 1, 1, 1) and off.dtype == torch.int64
    assert off.flatten().tolist() == [0, 96, 256, 320]  # cu_seqlens * H * D
    assert ragged_offsets([3, 5, 2], 4, 8, dtype=torch.int32).dtype == torch.int32
    # Each offset pair cuts exactly one document out of the flat [B, S, H, D] buffer.
    x = torch.arange(10 * 4 * 8).view(1, 10, 4, 8)
    flat = x.flatten()
    cu = cu_seqlens([3, 5, 2])
    for i in range(3):
        doc = flat[off.flatten()[i] : off.flatten()[i + 1]]
        assert torch.equal(doc, x[0, cu[i] : cu[i + 1]].flatten())


def test_seq_lens_tensor():
    t = seq_lens_tensor([3, 5, 2])
    assert t.shape == (3, 1, 1, 1) and t.dtype == torch.int32
    assert t.flatten().tolist() == [3, 5, 2]


def test_window_mapping_hand_computed():
    # sliding_window_causal w=4: 0 <= q - k < 4
    assert flash_window(True, 3, 0) == (True, (3, 0))
    assert cudnn_band(True, 3, 0) == (4, 0)
    # sliding_window w=4: |q - k| < 4
    assert flash_window(False, 3, 3) == (False, (3, 3))
    assert cudnn_band(False, 3, 3) == (4, 3)
    # full and causal
    assert flash_window(False, -1, -1) == (False, (-1, -1))
    assert cudnn_band(False, -1, -1) == (None, None)
    assert flash_window(True, -1, 0) == (True, (-1, 0))
    assert cudnn_band(True, -1, 0) == (None, 0)
    # causal caps the right side whatever the form says
    assert flash_window(True, 2, -1) == (True, (2, 0))


def test_window_forms_of_the_patterns():
    m = small_mask("sliding_window_causal", 40)
    f = express("x", m)
    assert (f.doc_lens, f.causal, f.window_left, f.window_right) == ((40,), True, 7, 0)
    assert flash_window(f.causal, f.window_left, f.window_right) == (True, (7, 0))
    assert cudnn_band(f.causal, f.window_left, f.window_right) == (8, 0)
    m = small_mask("sliding_window", 40)
    f = express("x", m)
    assert flash_window(f.causal, f.window_left, f.window_right) == (False, (7, 7))
    assert cudnn_band(f.causal, f.window_left, f.window_right) == (8, 7)


def test_cudnn_band_semantics_hand_computed():
    # One doc of 5, left bound 2 (hides j <= i - 2), right bound 0 (hides j > i).
    got = cudnn_visible([5], 2, 0).int().tolist()
    assert got == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 1, 1],
    ]
    # Two docs [2, 3], causal: block diagonal, nothing across documents.
    got = flash_visible([2, 3], True, (-1, 0)).int().tolist()
    assert got == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1],
    ]


def test_cudnn_descriptor_dims_match_lcab_layout():
    # lcab's contiguous [B, S, H, D], seen as cuDNN's (B, H, S, D), is the transpose view.
    dims, strides = bshd_dims(2, 5, 3, 4)
    x = torch.empty(2, 5, 3, 4).transpose(1, 2)
    assert dims == list(x.shape) == [2, 3, 5, 4]
    assert strides == list(x.stride()) == [60, 4, 12, 1]
    dims, strides = thd_dims(3, 4, 5, 8)  # 3 docs, longest 5
    assert dims == [3, 4, 5, 8] and strides == [160, 8, 32, 1]
    assert round_up(10, 64) == 64 and round_up(128, 64) == 128 and round_up(129, 64) == 192


def test_thd_packing_and_lse_layouts():
    b, s, h, d = 2, 10, 3, 4
    x = torch.randn(b, s, h, d)
    packed = to_thd(x)
    assert packed.shape == (b * s, h, d) and packed.data_ptr() == x.data_ptr()
    assert torch.equal(from_thd(packed, b), x)
    # flash varlen LSE is [H, total]; lcab wants [B, H, S].
    lse = torch.randn(b, h, s)
    flash_lse = lse.permute(1, 0, 2).reshape(h, b * s)
    assert torch.equal(lse_from_packed(flash_lse, b), lse)
    # cuDNN stats are padded per sequence: [n_seqs, H, max_seqlen, 1].
    lens = batched_doc_lens([3, 5, 2], b)
    seq, pos = padded_positions(lens)
    assert seq[:10].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2]
    assert pos[:10].tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0, 1]
    assert seq[10:].tolist() == [3, 3, 3, 4, 4, 4, 4, 4, 5, 5]
    stats = torch.full((len(lens), h, max(lens), 1), float("nan"))
    cu = cu_seqlens(lens)
    flat = lse.permute(0, 2, 1).reshape(b * s, h)  # [T, H]
    for i in range(len(lens)):
        stats[i, :, : lens[i], 0] = flat[cu[i] : cu[i + 1]].T
    assert torch.equal(lse_from_padded(stats, seq, pos, b), lse)


@pytest.mark.parametrize("seqlen", [61, 97])
@pytest.mark.parametrize("name", names())
def test_library_semantics_reproduce_the_dense_mask(name, seqlen):
    mask = small_mask(name, seqlen)
    try:
        form = express("flash2", mask)
    except Unsupported as e:
        assert f"cannot express {name}" in str(e)
        return
    dense = mask.dense()
    causal, window = flash_window(form.causal, form.window_left, form.window_right)
    assert torch.equal(flash_visible(form.doc_lens, causal, window), dense)
    left, right = cudnn_band(form.causal, form.window_left, form.window_right)
    assert torch.equal(cudnn_visible(form.doc_lens, left, right), dense)
    assert form.area() == mask.area == int(dense.sum())
    # Batch rows repeat the documents: the packed mask is block diagonal over the rows.
    two = batched_doc_lens(form.doc_lens, 2)
    assert torch.equal(flash_visible(two, causal, window), torch.block_diag(dense, dense))


def test_express_accepts_and_refuses_the_paper_patterns():
    accepted = {
        "full",
        "causal",
        "sliding_window",
        "sliding_window_causal",
        "full_document",
        "causal_document",
    }
    for name in names():
        mask = small_mask(name, 97)
        if name in accepted:
            express("flash2", mask)
        else:
            with pytest.raises(Unsupported, match=f"flash2 cannot express {name}: "):
                express("flash2", mask)
