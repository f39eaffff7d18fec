"""CP building blocks without processes: sub-masks, sharding, windows, merge, step functions, checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lcab.config import ConfigError, mask_config
from lcab.cp import registry as strategies
from lcab.cp.base import Strategy
from lcab.cp.merge import LseAccumulator
from lcab.cp.sharding import imbalance, make_shard
from lcab.cp.strategies.double_ring import default_windows
from lcab.cp.submask import runs_from_ranges, submask
from lcab.kernels import base as kernels
from lcab.kernels import create
from lcab.kernels.base import ShapeSpec
from lcab.kernels.torch_eager import eager_attention
from lcab.masks import build

MASKS = [
    "full",
    "causal",
    "causal_document",
    "sliding_window_causal",
    "share_question",
    "prefix_lm_causal",
    "block_sparse",
    "sliding_window",
    "global_sliding_window",
    "block_causal_document",
]


def _mask(name: str, s: int):
    return build(mask_config(dict(name=name, window=17, sparse_block=16, block=16)), s)


@pytest.mark.parametrize("name", MASKS)
def test_submask_is_exact_on_random_runs(name):
    s = 203
    m = _mask(name, s)
    d = m.dense()
    rng = np.random.default_rng(1)
    for _ in range(15):
        cuts = sorted(rng.choice(np.arange(1, s), 7, replace=False).tolist())
        b = [0, *cuts, s]
        ranges = [(b[i], b[i + 1]) for i in range(len(b) - 1)]
        rng.shuffle(ranges)
        qr, kr = ranges[:4], ranges[3:]
        sm = submask(m, runs_from_ranges(qr), runs_from_ranges(kr))
        qi = torch.tensor([t for a, e in qr for t in range(a, e)])
        ki = torch.tensor([t for a, e in kr for t in range(a, e)])
        ref = d[qi][:, ki]
        got = torch.zeros_like(ref)
        if sm is not None:
            got[sm.q0 : sm.q1, sm.k0 : sm.k1] = sm.mask.dense()
            assert sm.area == int(ref.sum())
        assert torch.equal(got, ref)


@pytest.mark.parametrize("shard", ["contiguous", "zigzag", "doc_zigzag", "balanced"])
@pytest.mark.parametrize("s", [128, 131, 257])
def test_shards_cover_every_token_once(shard, s):
    m = _mask("causal_document", s)
    for w in (2, 4, 8):
        sh = make_shard(shard, m, w)
        idx = np.concatenate([sh.index(r) for r in range(w)])
        assert sorted(idx[idx >= 0].tolist()) == list(range(s))
        assert sh.notes["pad_tokens"] == int((idx < 0).sum())
        assert sum(sh.row_area(m, r) for r in range(w)) == m.area


def test_zigzag_is_megatrons_layout():
    sh = make_shard("zigzag", _mask("causal", 64), 4)
    # 8 chunks of 8: rank r holds chunks r and 7 - r.
    assert sh.ranges[1] == [(8, 16), (48, 56)]
    assert sh.notes["split"] == "even" and sh.notes["pad_tokens"] == 0


def test_megatron_zigzag_matches_when_installed():
    pytest.importorskip("megatron.core")
    from megatron.core import utils

    s, w = 64, 4
    sh = make_shard("zigzag", _mask("causal", s), w)
    tokens = torch.arange(s)[None]
    for r in range(w):
        import unittest.mock as mock

        with (
            mock.patch("megatron.core.parallel_state.get_context_parallel_world_size", return_value=w),
            mock.patch("megatron.core.parallel_state.get_context_parallel_rank", return_value=r),
        ):
            got = utils.get_batch_on_this_cp_rank({"tokens": tokens})["tokens"][0]
        assert got.tolist() == sh.index(r).tolist()


def test_balanced_beats_contiguous_on_causal():
    m = _mask("causal", 1024)
    areas = {
        n: imbalance([make_shard(n, m, 8).row_area(m, r) for r in range(8)])
        for n in ("contiguous", "balanced")
    }
    assert areas["balanced"] < 1.05 < areas["contiguous"]


def test_double_ring_window_rule():
    assert [default_windows(r) for r in (1, 2, 4, 8, 9, 12, 16)] == [1, 1, 2, 2, 3, 3, 4]


def test_lse_merge_matches_one_softmax():
    torch.manual_seed(0)
    q, k = torch.randn(1, 10, 2, 4, dtype=torch.float64), torch.randn(1, 12, 2, 4, dtype=torch.float64)
    m = torch.rand(10, 12) > 0.5
    m[3] = False
    out, lse = eager_attention(q, k, k, m)
    acc = LseAccumulator(q)
    for a, b in ((0, 5), (5, 9), (9, 12)):
        o, l_ = eager_attention(q, k[:, a:b], k[:, a:b], m[:, a:b])
        acc.add(o, l_)
    assert torch.allclose(acc.out, out, atol=1e-12)
    assert torch.equal(torch.isinf(acc.lse), torch.isinf(lse))


@pytest.mark.parametrize("kernel", ["torch", "sdpa_math", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_fns_match_autograd(kernel, dtype):
    m = _mask("causal_document", 48)
    shape = ShapeSpec(1, 4, 2, 8, dtype, torch.device("cpu"))
    fns = create(kernel).step_fns(m, shape)
    torch.manual_seed(0)
    q = torch.randn(1, 48, 4, 8, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(1, 48, 2, 8, dtype=dtype, requires_grad=True) for _ in range(2))
    out, _ = eager_attention(q, k, v, m.dense())
    dout = torch.randn_like(out)
    ref = torch.autograd.grad(out, (q, k, v), dout)
    o2, lse = fns.fwd(q.detach(), k.detach(), v.detach())
    got = fns.bwd(dout, q.detach(), k.detach(), v.detach(), o2, lse)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert (o2 - out).abs().max() < tol
    for a, b in zip(got, ref, strict=True):
        assert (a - b).abs().max() < tol * 10


def test_kernel_without_step_fns_is_unsupported():
    class NoLse(kernels.Kernel):
        name = "nolse"
        capabilities = kernels.Capabilities(("cpu",), ("fp32",), ("dense",), backward=True)  # no steps

    with pytest.raises(kernels.Unsupported, match="nolse has no CP step functions"):
        NoLse().step_fns(_mask("causal", 16), ShapeSpec(1, 2, 2, 8, torch.float32, torch.device("cpu")))


def _shape(hq, hkv):
    return ShapeSpec(1, hq, hkv, 16, torch.float32, torch.device("cpu"))


def test_constraint_messages():
    uly = strategies.get("ulysses")
    with pytest.raises(ConfigError, match="ulysses degree 8 does not divide 6 kv heads"):
        uly.check({"ulysses_degree": 8}, _shape(48, 6), 8)
    with pytest.raises(ConfigError, match="ulysses degree 4 does not divide 6 q heads"):
        uly.check({"ulysses_degree": 4}, _shape(6, 6), 4)
    # kv heads below the degree are replicated, and that is recorded.
    assert uly.check({"ulysses_degree": 8}, _shape(64, 2), 8).kv_replicas == 4
    with pytest.raises(ConfigError, match="world size 8"):
        strategies.get("usp").check({"ulysses_degree": 3, "ring_degree": 2}, _shape(6, 6), 8)
    with pytest.raises(ConfigError, match="windows do not divide"):
        strategies.get("double_ring").check({"windows": 3}, _shape(4, 4), 8)
    with pytest.raises(ConfigError, match="too short"):
        make_shard("zigzag", _mask("causal", 6), 4)
    assert set(strategies.names()) >= {"ulysses", "ring", "ring_allgather", "usp", "double_ring"}


def test_a_strategy_without_emulation_says_so():
    """cp.emulate asks the strategy for its ranks' compute; one that has none is Unsupported
    with its name, never silently given another strategy's buffers."""

    class Bare(Strategy):
        name = "bare"

    with pytest.raises(kernels.Unsupported, match="bare cannot be emulated"):
        Bare().emulated_step(None, None, "fwd")
    with pytest.raises(kernels.Unsupported, match="bare counts no emulated bytes"):
        Bare().comm_bytes(None, None, "fwd")
    assert "peer implementation" in strategies.get("yunchang_usp").cannot_emulate
    assert not strategies.get("ring_allgather").cannot_emulate
