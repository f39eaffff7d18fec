"""The document-length sampler: seeded, exact packing, the split rule, the tables' shape."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lcab.config import BlockDocMaskConfig, DocMaskConfig
from lcab.masks.documents import (
    draw_lengths,
    load_table,
    max_doc_len,
    sample_block_docs,
    sample_doc_lens,
    table_names,
)

CFG = DocMaskConfig(name="causal_document")


@pytest.mark.parametrize("seqlen", [1, 2, 7, 257, 1000, 1537, 4096, 65536, 786432])
@pytest.mark.parametrize("params", [{}, {"long_doc_frac": 0.6}, {"max_doc_frac": 1.0}, {"doc_table": "long"}])
def test_packing_is_exact_and_split(seqlen, params):
    cfg = replace(CFG, **params)
    lens = sample_doc_lens(cfg, seqlen)
    assert sum(lens) == seqlen
    assert min(lens) >= 1
    cap = max(1, int(np.floor(cfg.max_doc_frac * seqlen)))
    assert max_doc_len(cfg, seqlen) == cap and max(lens) <= cap
    assert lens == sample_doc_lens(cfg, seqlen)  # a pure function of (cfg, S)


def test_seed_changes_documents():
    a = sample_doc_lens(CFG, 65536)
    assert sample_doc_lens(replace(CFG, seed=1), 65536) != a
    assert sample_doc_lens(replace(CFG, seed=0), 65536) == a


def test_tables_ship_and_load():
    assert {"default", "long"} <= set(table_names())
    for name in table_names():
        t = load_table(name)
        assert np.isclose(t.weight.sum(), 1.0) and np.all(t.lo <= t.hi)
        assert np.all(t.lo[1:] > t.hi[:-1])  # bins are ordered and disjoint
    d = load_table("default")
    # The anchors of the paper's default table.
    assert (201, 500) in zip(d.lo.tolist(), d.hi.tolist(), strict=True)
    i = d.lo.tolist().index(201)
    assert abs(d.weight[i] - 0.28) < 1e-9 and abs(d.weight[i + 1] - 0.25) < 1e-9 and d.hi[i + 1] == 1024
    assert d.hi.max() >= 131072  # a 128K+ tail
    with pytest.raises(ValueError, match="default"):
        load_table("no_such_table")


@pytest.mark.parametrize("name", ["default", "long"])
def test_draws_follow_the_table(name):
    t = load_table(name)
    n = 200_000
    x = draw_lengths(np.random.default_rng(0), n, t)
    counts = np.array([np.count_nonzero((x >= lo) & (x <= hi)) for lo, hi in zip(t.lo, t.hi, strict=True)])
    assert counts.sum() == n  # every draw lands in a bin
    # 5 standard errors of a binomial proportion: a real mismatch, not noise, fails.
    se = np.sqrt(t.weight * (1 - t.weight) / n)
    assert np.all(np.abs(counts / n - t.weight) <= 5 * se + 1e-4)
    # Uniform inside a bin: the mean of the [201, 500] bin is its midpoint.
    if name == "default":
        inside = x[(x >= 201) & (x <= 500)]
        assert abs(inside.mean() - 350.5) < 2.0


def test_long_doc_fraction():
    t = load_table("default")
    n = 200_000
    lo, hi = 8192, 30720
    x_table = draw_lengths(np.random.default_rng(1), n, t)
    p_table = np.mean((x_table >= lo) & (x_table <= hi))
    x = draw_lengths(np.random.default_rng(2), n, t, 0.6, lo, hi)
    in_range = np.mean((x >= lo) & (x <= hi))
    assert abs(in_range - (0.6 + 0.4 * p_table)) < 0.006
    every = draw_lengths(np.random.default_rng(3), 1000, t, 1.0, lo, hi)
    assert np.all((every >= lo) & (every <= hi))
    # Packed at a CP scale, the long variant yields fewer, longer documents.
    s = 8192 * 64
    short = sample_doc_lens(CFG, s)
    long = sample_doc_lens(replace(CFG, long_doc_frac=0.6), s)
    assert np.mean(long) > 3 * np.mean(short)


def test_block_docs():
    cfg = BlockDocMaskConfig(name="block_causal_document", block=64, max_blocks_per_doc=8)
    for s in (1, 63, 64, 1000, 4096):
        lens = sample_block_docs(cfg, s)
        assert sum(lens) == s
        assert all(n % 64 == 0 and 64 <= n <= 512 for n in lens[:-1])
        assert 1 <= lens[-1] <= 512
    lens = sample_block_docs(cfg, 64 * 4000)
    counts = np.bincount(np.asarray(lens[:-1]) // 64, minlength=9)[1:]
    assert np.all(counts > 0.8 * counts.mean())  # 1..8 blocks, uniformly
