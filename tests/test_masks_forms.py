"""Derived forms: the band builder, is_full/is_causal, and VarlenForm derived from row intervals."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from lcab.config import (
    BlockDocMaskConfig,
    BlockSparseMaskConfig,
    DocMaskConfig,
    MaskConfig,
    PrefixDocMaskConfig,
    PrefixMaskConfig,
    WindowMaskConfig,
    mask_config,
)
from lcab.masks import AttnMask, build
from lcab.masks.forms import VarlenForm, is_causal, is_full, varlen_form, why_not_varlen
from lcab.masks.regions import band, bounds


def rule_dense(cu, causal: bool, left: int, right: int) -> torch.Tensor:
    """flash-attn's documented rule, pair by pair."""
    s = cu[-1]
    out = torch.zeros(s, s, dtype=torch.bool)
    for a, b in itertools.pairwise(cu):
        for i in range(a, b):
            for j in range(a, b):
                ok = (left < 0 or j >= i - left) and (right < 0 or j <= i + right)
                out[i, j] = ok and (not causal or j <= i)
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_band_every_window(n):
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    for left, right in itertools.product([None, *range(n + 1)], repeat=2):
        slices = band(3, 3 + n, left, right)  # an offset block: the band is placed, not just shaped
        m = AttnMask(tuple(slices), n + 5, n + 5)
        want = torch.ones(n, n, dtype=torch.bool)
        if left is not None:
            want &= k >= q - left
        if right is not None:
            want &= k <= q + right
        got = m.dense()
        assert torch.equal(got[3 : 3 + n, 3 : 3 + n], want), (n, left, right)
        assert int(got.sum()) == int(want.sum()) == sum(s.area() for s in slices)
        assert len(slices) <= 3


def random_form(rng: np.random.Generator) -> VarlenForm:
    lens = rng.integers(1, 12, size=rng.integers(1, 5))
    causal = bool(rng.random() < 0.5)
    left = int(rng.integers(-1, 8))
    right = 0 if causal else int(rng.integers(-1, 8))
    return VarlenForm(tuple(bounds(lens).tolist()), causal, left, right)


def test_varlen_area_closed_form():
    rng = np.random.default_rng(0)
    for _ in range(300):
        f = random_form(rng)
        assert f.area() == int(rule_dense(f.cu_seqlens, f.causal, f.window_left, f.window_right).sum()), f


def test_varlen_form_is_derived_from_rows():
    """Masks built from any varlen rule come back as a form with exactly the same visibility."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        f = random_form(rng)
        slices = [
            sl
            for a, b in itertools.pairwise(f.cu_seqlens)
            for sl in band(
                a,
                b,
                None if f.window_left < 0 else f.window_left,
                None if f.window_right < 0 else f.window_right,
            )
        ]
        m = AttnMask(tuple(slices), f.cu_seqlens[-1], f.cu_seqlens[-1])
        g = varlen_form(m)
        assert g is not None and why_not_varlen(m) == "", (f, why_not_varlen(m))
        assert torch.equal(rule_dense(g.cu_seqlens, g.causal, g.window_left, g.window_right), m.dense()), (
            f,
            g,
        )
        assert g.area() == m.area
        assert g.causal == (g.window_right == 0)


@pytest.mark.parametrize("name", ["causal_document", "full_document"])
@pytest.mark.parametrize("seqlen", [1, 7, 1000, 1537, 16384])
def test_varlen_documents(name, seqlen):
    for params in ({}, {"long_doc_frac": 0.6, "long_min": 100, "long_max": 900, "seed": 5}):
        m = build(replace(mask_config(dict(name=name)), **params), seqlen)
        f = varlen_form(m)
        assert f is not None
        assert f.cu_seqlens == tuple(bounds(m.doc_lens).tolist())
        assert f.doc_lens == m.doc_lens and f.max_seqlen == max(m.doc_lens)
        # With only 1-token documents causal and full coincide; either form is exact then.
        if f.max_seqlen > 1:
            assert f.causal == (name == "causal_document")
        assert f.window_left == -1 and f.window_right == (0 if f.causal else -1)
        t = f.cu_seqlens_tensor("cpu")
        assert t.dtype == torch.int32 and t.tolist() == list(f.cu_seqlens)
        assert f.area() == m.area


def test_varlen_single_sequence_patterns():
    s = 1000
    assert varlen_form(build(MaskConfig(name="causal"), s)) == VarlenForm((0, s), True, -1, 0)
    assert varlen_form(build(MaskConfig(name="full"), s)) == VarlenForm((0, s), False, -1, -1)
    assert varlen_form(build(WindowMaskConfig(name="sliding_window", window=64), s)) == VarlenForm(
        (0, s), False, 63, 63
    )
    f = varlen_form(build(WindowMaskConfig(name="sliding_window_causal", window=64), s))
    assert f == VarlenForm((0, s), True, 63, 0) and f.has_window
    # A window wider than the sequence is no window at all: derived from rows, not from the name.
    assert varlen_form(build(WindowMaskConfig(name="sliding_window_causal", window=4096), s)) == VarlenForm(
        (0, s), True, -1, 0
    )


@pytest.mark.parametrize(
    "cfg",
    [
        DocMaskConfig(name="share_question", max_doc_frac=0.1),
        BlockSparseMaskConfig(name="block_sparse", sparse_block=64, density=0.5),
        PrefixMaskConfig(name="prefix_lm_causal", prefix=0.3),
        PrefixDocMaskConfig(name="prefix_lm_document"),
        DocMaskConfig(name="causal_blockwise"),
        WindowMaskConfig(name="global_sliding_window", window=64),
        BlockDocMaskConfig(name="block_causal_document", block=64),
    ],
    ids=lambda c: c.name,
)
def test_not_varlen(cfg):
    m = build(cfg, 2048)
    assert varlen_form(m) is None
    reason = why_not_varlen(m)
    assert reason and "\n" not in reason


def test_not_varlen_rectangular():
    from lcab.masks import Slice

    m = AttnMask((Slice(0, 4, 0, 8),), 4, 8)
    assert varlen_form(m) is None and "seqlen_q" in why_not_varlen(m)
    assert is_full(m) and not is_causal(m)


def test_full_and_causal_from_rows():
    for s in (1, 7, 1000):
        assert is_full(build(MaskConfig(name="full"), s)) and is_causal(build(MaskConfig(name="causal"), s))
        # Same visibility through other generators counts too.
        assert is_full(build(WindowMaskConfig(name="sliding_window", window=s), s))
        assert is_causal(build(WindowMaskConfig(name="sliding_window_causal", window=s), s))
        assert is_full(build(BlockSparseMaskConfig(name="block_sparse", sparse_block=16, density=1.0), s))
    for name in ("causal_document", "sliding_window", "prefix_lm_causal", "share_question"):
        m = build(mask_config(dict(name=name, window=5, prefix=0.3)), 1000)
        assert not is_full(m) and not is_causal(m)
    assert not is_full(build(MaskConfig(name="causal"), 7)) and not is_causal(
        build(MaskConfig(name="full"), 7)
    )


def test_slice_area_closed_form():
    from lcab.masks import Slice, SliceType

    for m, n in itertools.product(range(1, 9), repeat=2):
        for t in SliceType:
            sl = Slice(2, 2 + m, 1, 1 + n, t)
            lo, hi = sl.row_bounds()
            assert sl.area() == int((hi - lo).sum()), (m, n, t)
