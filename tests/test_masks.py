"""Every registered pattern against a dense reference written from ANCHORS.md section 2, and every
derived form (slices, row intervals, dense, Flex mask_mod/BlockMask, varlen) against each other.

The references use only broadcast comparisons of q and k (and the generator's doc_lens, whose
sampler is tested in test_masks_documents.py); they share no code with the generators.
"""

from __future__ import annotations

import glob
import os
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from lcab.config import (
    BlockSparseMaskConfig,
    DocMaskConfig,
    MaskConfig,
    PrefixMaskConfig,
    WindowMaskConfig,
    mask_config,
)
from lcab.masks import build, names
from lcab.masks.flex import block_mask, mask_mod
from lcab.masks.forms import varlen_form

SEQLENS = [1, 7, 257, 1000, 1537, 4096]
WINDOWS = [{"window": 1}, {"window": 37}, {"window": 5000}]
DOCS = [{}, {"long_doc_frac": 0.6, "long_min": 100, "long_max": 700}, {"max_doc_frac": 1.0, "seed": 3}]
# Small windows/blocks so the clipping at sequence and document edges is exercised at these S.
PARAMS: dict[str, list[dict]] = {
    "full": [{}],
    "causal": [{}],
    "sliding_window": WINDOWS,
    "sliding_window_causal": WINDOWS,
    "global_sliding_window": WINDOWS,
    "full_document": DOCS,
    "causal_document": DOCS,
    "share_question": [{}, {"seed": 1, "max_doc_frac": 0.5}],
    "causal_blockwise": [{}, {"seed": 1}],
    "prefix_lm_causal": [{"prefix": 0.0}, {"prefix": 0.37}, {"prefix": 1.0}],
    "prefix_lm_document": [{"prefix": 0.37}, {"prefix": 0.5, "seed": 2}],
    "block_causal_document": [
        {"block": 64, "max_blocks_per_doc": 5},
        {"block": 100, "max_blocks_per_doc": 3, "seed": 4},
        {"block": 5000},
    ],
    "block_sparse": [
        {"sparse_block": 64, "density": 0.3},
        {"sparse_block": 100, "density": 0.05, "seed": 7},
        {"sparse_block": 16, "density": 1.0},
    ],
}
# S=4096 only with each pattern's first parameter set: the other sets are covered at the smaller
# (odd) lengths, and this keeps the file well under a minute on two cores.
CASES = [
    pytest.param(name, p, s, id=f"{name}-{i}-S{s}")
    for name, plist in PARAMS.items()
    for i, p in enumerate(plist)
    for s in SEQLENS
    if s < 4096 or i == 0
]


def _doc_ids(doc_lens, seqlen):
    lens = np.asarray(doc_lens)
    assert lens.min() >= 1 and lens.sum() == seqlen
    ids = torch.from_numpy(np.repeat(np.arange(len(lens)), lens))
    starts = torch.from_numpy(np.concatenate([[0], np.cumsum(lens)[:-1]]))
    return ids, starts[ids], starts[ids] + torch.from_numpy(lens)[ids]


def reference(name: str, cfg: MaskConfig, s: int, doc_lens) -> torch.Tensor:
    """Dense [S, S] visibility straight from the ANCHORS definitions."""
    q = torch.arange(s)[:, None]
    k = torch.arange(s)[None, :]
    w = getattr(cfg, "window", None)  # only the window patterns' schema has it
    if name == "full":
        return torch.ones(s, s, dtype=torch.bool)
    if name == "causal":
        return q >= k
    if name == "sliding_window":
        return (q - k).abs() < w
    if name == "sliding_window_causal":
        return (q - k >= 0) & (q - k < w)
    if name == "global_sliding_window":
        return (q < w) | (k < w) | ((q - k).abs() < w)
    if name == "prefix_lm_causal":
        p = round(cfg.prefix * s)
        return ((q < p) & (k < p)) | ((q >= p) & (k <= q))
    d, start, end = _doc_ids(doc_lens, s)
    dq, dk = d[:, None], d[None, :]
    same = dq == dk
    if name == "full_document":
        return same
    if name == "causal_document":
        return same & (k <= q)
    if name == "share_question":
        first_two = (dq <= 1) & (dk <= 1) & (k <= q)
        answer = (dq >= 2) & ((dk == 0) | (same & (k <= q)))
        return first_two | answer
    if name == "causal_blockwise":
        last = int(d.max())
        return (same & (k <= q)) | ((dq == last) & (k <= q))
    if name == "prefix_lm_document":
        n = (end - start)[:, None]
        p = torch.tensor([round(cfg.prefix * int(x)) for x in n[:, 0]])[:, None]
        lq, lk = q - start[:, None], k - start[:, None]
        return same & (((lq < p) & (lk < p)) | ((lq >= p) & (k <= q)))
    if name == "block_causal_document":
        b = cfg.block
        block_end = torch.minimum((q // b + 1) * b, end[:, None])
        return same & (k < block_end)
    raise KeyError(name)


def test_every_pattern_has_reference_params():
    assert sorted(PARAMS) == names()


@pytest.mark.parametrize("name,params,seqlen", CASES)
def test_pattern(name, params, seqlen):
    cfg = replace(mask_config(dict(name=name)), **params)
    mask = build(cfg, seqlen)
    assert mask.name == name and mask.seqlen_q == mask.seqlen_k == seqlen
    dense = mask.dense()
    # The areas of every form agree exactly; a slice overlap would make the slice sum larger.
    assert mask.area == int(dense.count_nonzero()) == mask.row_intervals.area()
    assert sum(s.area() for s in mask.slices) == mask.area
    if name == "block_sparse":
        check_block_sparse(mask, cfg, dense)
    else:
        if name == "block_causal_document":
            check_block_docs(mask.doc_lens, cfg, seqlen)
        ref = reference(name, cfg, seqlen, mask.doc_lens)
        assert torch.equal(dense, ref), f"{name} {params} S={seqlen}: {int((dense ^ ref).sum())} pairs differ"
    form = varlen_form(mask)
    if form is not None:
        assert form.area() == mask.area
        assert form.cu_seqlens[0] == 0 and form.cu_seqlens[-1] == seqlen
    # The Flex path per parameter set at small S; at large S once per pattern (it is the slow part).
    if seqlen < 1000 or params is PARAMS[name][0]:
        check_flex(mask, dense, 16 if seqlen < 1000 else 128)


def check_block_docs(doc_lens, cfg: MaskConfig, seqlen: int) -> None:
    assert sum(doc_lens) == seqlen
    for n in doc_lens[:-1]:
        assert n % cfg.block == 0 and 1 <= n // cfg.block <= cfg.max_blocks_per_doc
    assert 1 <= doc_lens[-1] <= cfg.block * cfg.max_blocks_per_doc


def check_block_sparse(mask, cfg: MaskConfig, dense: torch.Tensor) -> None:
    b, s = cfg.sparse_block, mask.seqlen_q
    nb = -(-s // b)
    assert mask.tile == b
    padded = torch.zeros(nb * b, nb * b, dtype=torch.bool)
    padded[:s, :s] = dense
    tiles = padded.view(nb, b, nb, b).permute(0, 2, 1, 3).reshape(nb, nb, b * b)
    inside = torch.zeros(nb * b, nb * b, dtype=torch.bool)
    inside[:s, :s] = True
    inside_t = inside.view(nb, b, nb, b).permute(0, 2, 1, 3).reshape(nb, nb, b * b)
    # Every tile is all-or-nothing over its in-range part (the last row/column of tiles is cut at S).
    kept = tiles.any(-1)
    assert torch.equal(tiles, kept[..., None] & inside_t)
    expected = min(nb, max(1, round(cfg.density * nb)))
    assert kept.sum(1).tolist() == [expected] * nb
    assert mask.params["kept_blocks"] == expected


def check_flex(mask, dense: torch.Tensor, bs: int) -> None:
    s_q, s_k = dense.shape
    q = torch.arange(s_q)[:, None]
    k = torch.arange(s_k)[None, :]
    mm = mask_mod(mask)(torch.tensor(0), torch.tensor(0), q, k)
    assert torch.equal(mm, dense)
    bm = block_mask(mask, bs)
    nq, nk = -(-s_q // bs), -(-s_k // bs)

    def blocks(num, idx):
        out = torch.zeros(nq, nk, dtype=torch.bool)
        num, idx = num[0, 0], idx[0, 0]
        valid = torch.arange(idx.shape[-1])[None, :] < num[:, None]
        rows = torch.arange(nq)[:, None].expand_as(idx)
        out[rows[valid], idx[valid].long()] = True
        return out

    partial = blocks(bm.kv_num_blocks, bm.kv_indices)
    full = blocks(bm.full_kv_num_blocks, bm.full_kv_indices)
    assert not (partial & full).any()

    # Per block, how many pairs are visible and how many lie inside the S_q x S_k grid.
    def per_block(x):
        pad = torch.zeros(nq * bs, nk * bs, dtype=torch.int32)
        pad[:s_q, :s_k] = x
        return pad.view(nq, bs, nk, bs).sum(dim=(1, 3))

    visible = per_block(dense)
    size = per_block(torch.ones_like(dense))
    assert torch.equal(visible[full], size[full]), "a block marked full has a hidden pair"
    assert not visible[~(full | partial)].any(), "a block marked absent has a visible pair"
    # With mask_mod == dense, full blocks + mask_mod inside partial blocks reproduce the mask,
    # so the BlockMask path sees exactly mask.area pairs.
    assert int(visible[full | partial].sum()) == mask.area


def test_block_sparse_seeded():
    cfg = BlockSparseMaskConfig(name="block_sparse", sparse_block=32, density=0.25)
    a, b = build(cfg, 1000), build(cfg, 1000)
    assert a.slices == b.slices
    assert build(replace(cfg, seed=1), 1000).slices != a.slices


def test_bad_parameters_raise():
    for cfg in (
        WindowMaskConfig(name="sliding_window", window=0),
        BlockSparseMaskConfig(name="block_sparse", density=0.0),
        PrefixMaskConfig(name="prefix_lm_causal", prefix=1.5),
        DocMaskConfig(name="causal_document", doc_table="nope"),
    ):
        with pytest.raises(ValueError):
            build(cfg, 100)


def test_block_mask_is_cached():
    m = build(DocMaskConfig(name="causal_document"), 300)
    assert block_mask(m, 64) is block_mask(build(DocMaskConfig(name="causal_document"), 300), 64)
    assert block_mask(m, 32) is not block_mask(m, 64)


def test_dense_fallback_mod():
    # No shipped pattern needs more than 4 intervals per row without a tile table; build one that does.
    from lcab.masks.flex import mask_mod_kind
    from lcab.masks.slices import AttnMask, Slice

    slices = tuple(Slice(0, 10, 2 * j, 2 * j + 1) for j in range(6))
    m = AttnMask(slices, 10, 12)
    assert mask_mod_kind(m) == "dense"
    check_flex(m, m.dense(), 4)


CONF = os.path.join(os.path.dirname(__file__), "..", "lcab", "conf")


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(CONF, "mask", "*.yaml"))), ids=os.path.basename
)
def test_mask_yaml_composes(path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lcab.config import register_configs, schema_for

    stem = os.path.basename(path)[:-5]
    register_configs()
    with initialize_config_dir(os.path.abspath(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+mask={stem}"]).mask
    aliases = {"causal_doc": "causal_document", "full_doc": "full_document"}
    expected = aliases.get(stem, stem.removesuffix("_long"))
    assert cfg.name == expected and cfg.name in names()
    # Each file composes to its pattern's schema: only the parameters the pattern reads.
    assert OmegaConf.get_type(cfg) is schema_for("mask", expected)
    assert set(cfg) == {f.name for f in fields(schema_for("mask", expected))}
    assert cfg.get("long_doc_frac", 0.0) == (0.6 if stem.endswith("_long") else 0.0)
    with open(path) as f:
        if "window:" in f.read():
            assert cfg.window == 1024
    mask = build(cfg, 1000)
    assert mask.name == expected and mask.area == int(mask.dense().count_nonzero())


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("seqlen,bs", [(1024, 128), (768, 64)])
def test_block_mask_equals_torchs_create_block_mask(name, seqlen, bs):
    """lcab builds the BlockMask from exact tile counts; torch's create_block_mask evaluates
    mask_mod on every pair (eager). Both must give the same blocks, both directions."""
    from torch.nn.attention.flex_attention import create_block_mask

    mask = build(mask_config(dict(name=name, window=200, block=128, sparse_block=64)), seqlen)
    ours = block_mask(mask, bs)
    ref = create_block_mask(mask_mod(mask), None, None, seqlen, seqlen, device="cpu", BLOCK_SIZE=bs)
    for attr in ("kv", "full_kv", "q", "full_q"):
        n, i = getattr(ours, f"{attr}_num_blocks"), getattr(ours, f"{attr}_indices")
        n_ref, i_ref = getattr(ref, f"{attr}_num_blocks"), getattr(ref, f"{attr}_indices")
        assert torch.equal(n, n_ref), attr
        for row in range(n.shape[-1]):
            k = int(n[0, 0, row])
            assert torch.equal(i[0, 0, row, :k], i_ref[0, 0, row, :k]), (attr, row)


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("form", ["slices", "intervals", "dense"])
def test_every_mask_mod_form_is_exact(name, form):
    mask = build(mask_config(dict(name=name, window=100, block=64, sparse_block=32)), 700)
    q, k = torch.arange(700)[:, None], torch.arange(700)[None, :]
    got = mask_mod(mask, "cpu", form)(torch.tensor(0), torch.tensor(0), q, k)
    assert torch.equal(got, mask.dense())


def test_mask_mod_default_forms():
    from lcab.masks.flex import mask_mod_kind

    kinds = {n: mask_mod_kind(build(mask_config(dict(name=n)), 32768)) for n in names()}
    assert kinds.pop("block_sparse") == "tile"
    assert set(kinds.values()) == {"intervals"}
    with pytest.raises(ValueError, match="no exact tile table"):
        mask_mod(build(MaskConfig(name="causal"), 256), "cpu", "tile")
