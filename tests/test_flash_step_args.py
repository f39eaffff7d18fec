"""flash2 / flash3 / flash4 CP steps, checked on CPU against FlashAttention's documented semantics.

References written here, not taken from lcab: flash-attn's varlen rule (sequence i is packed
rows cu_seqlens_q[i]..[i+1] against packed keys cu_seqlens_k[i]..[i+1]; inside an m x n
sequence query r sees key c iff c <= r + n - m + right and c >= r + n - m - left, bottom-right
aligned, causal meaning right = 0, -1 / None for unbounded; the LSE is [H, total_q], natural
log; the backward takes out and lse and returns dq, dk, dv of P = exp(scale * S - lse)), the
sub-mask's dense form, and fp64 autograd of dense attention. Stand-in libraries follow that rule
with each generation's own parameter names, so the adapters' binding, packing, scatter and
GQA run end to end; the real libraries run on the GPU (scripts/gpu_flash4.sh).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lcab import kernels
from lcab.config import mask_config
from lcab.cp.sharding import balanced, contiguous, doc_zigzag, zigzag
from lcab.cp.submask import submask
from lcab.cp.tiles import StepCache, make_tiles
from lcab.kernels.base import ShapeSpec, Unsupported
from lcab.kernels.flash_args import call_values, fa4_conflict, flash_step, interval_form
from lcab.kernels.flash_family import _Side, flash_step_fns
from lcab.masks import build, names

CPU = torch.device("cpu")
SHAPE = ShapeSpec(batch=2, heads_q=4, heads_kv=2, head_dim=8, dtype=torch.float64, device=CPU)
SCALE = SHAPE.head_dim**-0.5


def small_mask(name: str, seqlen: int):
    cfg = mask_config(dict(name=name, window=9, block=8, max_blocks_per_doc=3, sparse_block=8, seed=2))
    return build(cfg, seqlen)


def _unb(x) -> bool:
    return x is None or x < 0


def fa_visible(cu_q, cu_k, causal, left, right) -> torch.Tensor:
    """flash-attn's varlen visibility over packed rows x packed keys."""
    cu_q, cu_k = [int(x) for x in cu_q], [int(x) for x in cu_k]
    out = torch.zeros(cu_q[-1], cu_k[-1], dtype=torch.bool)
    if causal:
        right = 0
    for i in range(len(cu_q) - 1):
        m, n = cu_q[i + 1] - cu_q[i], cu_k[i + 1] - cu_k[i]
        r = torch.arange(m)[:, None]
        c = torch.arange(n)[None, :]
        keep = torch.ones(m, n, dtype=torch.bool)
        if not _unb(right):
            keep &= c <= r + n - m + right
        if not _unb(left):
            keep &= c >= r + n - m - left
        out[cu_q[i] : cu_q[i + 1], cu_k[i] : cu_k[i + 1]] = keep
    return out


def _window(kw) -> tuple:
    if "window_size" in kw:
        return tuple(kw["window_size"])
    return kw["window_size_left"], kw["window_size_right"]


def _gqa(k, hq):
    return k.repeat_interleave(hq // k.shape[1], 1)


def _fwd(q, k, v, kw):
    vis = fa_visible(
        kw["cu_seqlens_q"], kw["cu_seqlens_k"], kw.get("causal", kw.get("is_causal")), *_window(kw)
    )
    s = torch.einsum("qhd,khd->hqk", q, _gqa(k, q.shape[1])) * kw["softmax_scale"]
    s = s.masked_fill(~vis, float("-inf"))
    lse = torch.logsumexp(s, -1)  # [H, total_q]
    out = torch.einsum("hqk,khd->qhd", torch.softmax(s, -1).nan_to_num(0.0), _gqa(v, q.shape[1]))
    return out, lse


def _bwd(dout, q, k, v, out, lse, kw):
    vis = fa_visible(
        kw["cu_seqlens_q"], kw["cu_seqlens_k"], kw.get("causal", kw.get("is_causal")), *_window(kw)
    )
    hq, hk = q.shape[1], k.shape[1]
    kk, vv = _gqa(k, hq), _gqa(v, hq)
    s = torch.einsum("qhd,khd->hqk", q, kk) * kw["softmax_scale"]
    p = torch.exp(s - lse[:, :, None]).masked_fill(~vis, 0.0)
    dv = torch.einsum("hqk,qhd->khd", p, dout)
    dp = torch.einsum("qhd,khd->hqk", dout, vv)
    d = (dout * out).sum(-1).t()  # [H, total_q]
    ds = p * (dp - d[:, :, None])
    dq = torch.einsum("hqk,khd->qhd", ds, kk) * kw["softmax_scale"]
    dk = torch.einsum("hqk,qhd->khd", ds, q) * kw["softmax_scale"]
    fold = lambda x: x.view(x.shape[0], hk, hq // hk, x.shape[-1]).sum(2)  # noqa: E731
    return dq, fold(dk), fold(dv)


# Each generation's varlen internals, with the parameter names of its own source.
def fa2_fwd(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
    window_size_left=-1, window_size_right=-1, softcap=0.0, alibi_slopes=None, return_softmax=False,
    block_table=None, leftpad_k=None, seqused_k=None,
):  # fmt: skip
    assert (
        dropout_p == 0.0 and not return_softmax and alibi_slopes is None and cu_seqlens_q.dtype == torch.int32
    )
    out, lse = _fwd(q, k, v, locals())
    return out, lse.masked_fill(torch.isinf(lse), float("inf")), None, None  # +inf on empty rows


def fa2_bwd(
    dout, q, k, v, out, softmax_lse, dq, dk, dv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
    dropout_p, softmax_scale, causal, window_size_left, window_size_right, softcap, alibi_slopes,
    deterministic, rng_state=None,
):  # fmt: skip
    g = _bwd(dout, q, k, v, out, softmax_lse, locals())
    for buf, x in zip((dq, dk, dv), g, strict=True):
        buf.copy_(x)  # flash-attn 2 writes into the buffers it is given, returns softmax_d
    return torch.zeros(1)


def fa3_fwd(
    q, k, v, k_new, v_new, qv, out, cu_seqlens_q, cu_seqlens_k, cu_seqlens_k_new, seqused_q, seqused_k,
    max_seqlen_q, max_seqlen_k, page_table, kv_batch_idx, leftpad_k, rotary_cos, rotary_sin,
    seqlens_rotary, q_descale, k_descale, v_descale, softmax_scale=None, causal=False,
    window_size=(-1, -1), attention_chunk=0, softcap=0.0, rotary_interleaved=True,
    scheduler_metadata=None, num_splits=1, pack_gqa=None, sm_margin=0,
):  # fmt: skip
    assert k_new is None and page_table is None and out is None
    o, lse = _fwd(q, k, v, locals())
    return o, lse, None, None


def fa3_bwd(
    dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, sequed_q, sequed_k, max_seqlen_q,
    max_seqlen_k, dq, dk, dv, softmax_scale, causal, window_size=(-1, -1), softcap=0.0,
    deterministic=False, sm_margin=0,
):  # fmt: skip
    return (*_bwd(dout, q, k, v, out, softmax_lse, locals()), torch.zeros(1))


def fa4_fwd(
    q, k, v, qv=None, cu_seqlens_q=None, cu_seqlens_k=None, seqused_q=None, seqused_k=None,
    max_seqlen_q=None, max_seqlen_k=None, min_seqlen_k=None, page_table=None, softmax_scale=None,
    causal=False, softcap=None, window_size_left=None, window_size_right=None, learnable_sink=None,
    mask_mod=None, return_lse=False, out=None, lse=None, aux_tensors=None,
):  # fmt: skip
    assert return_lse and isinstance(max_seqlen_q, int) and isinstance(max_seqlen_k, int)
    assert window_size_left is None or window_size_left >= 0  # None, never -1, for unbounded
    o, lse = _fwd(q, k, v, locals())
    return o, lse, None, None, None


def fa4_bwd(
    q, k, v, out, dout, lse, softmax_scale=None, causal=False, softcap=0.0, window_size_left=None,
    window_size_right=None, m_block_size=64, n_block_size=128, num_threads=256, pack_gqa=False,
    cu_seqlens_q=None, cu_seqlens_k=None, seqused_q=None, seqused_k=None, max_seqlen_q=None,
    max_seqlen_k=None, deterministic=False, dq=None, dk=None, dv=None, mask_mod=None,
):  # fmt: skip
    return _bwd(dout, q, k, v, out, lse, locals())


LIBS = {"flash2": (fa2_fwd, fa2_bwd), "flash3": (fa3_fwd, fa3_bwd), "flash4": (fa4_fwd, fa4_bwd)}


def shards(mask, world):
    out = [zigzag(mask.seqlen_q, world), contiguous(mask.seqlen_q, world), balanced(mask, world)]
    if mask.doc_lens is not None:
        out.append(doc_zigzag(mask, world))
    return out


def step_visible(step, batch) -> torch.Tensor:
    """Read back what the adapter hands the library: which buffer tokens each packed row / key
    is (through the adapter's own gather), and the library's rule on the cu_seqlens it gets."""
    kw = call_values(step, SCALE)
    vis = fa_visible(kw["cu_seqlens_q"], kw["cu_seqlens_k"], kw["causal"], *kw["window_size"])
    sq, sk = step.layout.seqlen_q, step.layout.seqlen_k
    q_tok = _Side(step.q, CPU).take(torch.arange(batch * sq).view(batch, sq, 1, 1)).flatten()
    k_tok = _Side(step.k, CPU).take(torch.arange(batch * sk).view(batch, sk, 1, 1)).flatten()
    out = torch.zeros(batch * sq, batch * sk, dtype=torch.bool)
    out[q_tok[:, None], k_tok[None, :]] = vis
    return out


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("name", names())
def test_step_arguments_reproduce_every_sub_mask(name, world, monkeypatch):
    kernel = kernels.create("flash4")
    monkeypatch.setattr(type(kernel), "_ready", lambda self, shape: None)
    monkeypatch.setattr(type(kernel), "has_steps", lambda self, device_type: True)
    monkeypatch.setattr(type(kernel), "_step_functions", lambda self: LIBS["flash4"])
    cache = StepCache(kernel, SHAPE)
    mask = small_mask(name, 96)
    unbounded = {2: -1, 4: None}[world]  # both conventions
    taken = cut = uncut = 0
    for shard in shards(mask, world):
        for r in range(world):
            for t in range(world):
                sm = submask(mask, shard.runs(r), shard.runs(t))
                if sm is None:
                    continue
                try:
                    step = flash_step(sm.mask, 2, unbounded)
                except Unsupported:
                    cut += 1
                    try:  # what a ring does then: cut the kv run at the q run's edges
                        make_tiles(mask, shard.runs(r), shard.runs(t), cache)
                    except Unsupported:
                        uncut += 1
                    continue
                taken += 1
                want = torch.block_diag(*[sm.mask.dense()] * 2)
                assert torch.equal(step_visible(step, 2), want), f"{shard.name} rank {r} step {t}"
                if step.causal:
                    assert step.window[1] == 0
    # Full, causal, windows and documents: every step is varlen calls (one, or one per cut piece).
    varlen = name in ("full", "causal", "sliding_window", "sliding_window_causal") or name.endswith(
        "_document"
    )
    if varlen and name not in ("block_causal_document", "prefix_lm_document"):
        assert uncut == 0 and taken > 0
    if name in ("full", "causal", "causal_document", "full_document"):
        assert cut == 0  # one call per step, as the paper's CP baselines make


def test_hand_computed_step():
    from lcab.masks.slices import AttnMask, Slice

    # Row 3 sees nothing; rows 0-2 see keys 0-1 (full); rows 4-6 causal against keys 3-8 (bottom-right).
    mask = AttnMask((Slice(0, 3, 0, 2), Slice(4, 7, 3, 9, "causal")), 7, 9)
    with pytest.raises(Unsupported, match="one flash-attn bottom-right window"):
        flash_step(mask, 1)  # a full block and a causal block share no window
    mask = AttnMask((Slice(0, 3, 0, 4, "causal"), Slice(4, 7, 5, 9, "causal")), 7, 9)
    step = flash_step(mask, 2, None)
    assert step.q.starts == (0, 4, 7, 11) and step.q.lens == (3, 3, 3, 3)
    assert step.k.starts == (0, 5, 9, 14) and step.k.lens == (4, 4, 4, 4)
    assert step.q.cu_seqlens == [0, 3, 6, 9, 12] and step.k.max_len == 4
    assert step.causal and step.window == (None, 0) and step.q.span is None
    whole = flash_step(AttnMask((Slice(0, 6, 0, 6, "causal"),), 6, 6), 2, -1)
    assert whole.q.span == (0, 12) and whole.q.whole and whole.window == (-1, 0)


def _ring_reference(mask, q, k, v, dout):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    rep = q.shape[2] // k.shape[2]
    s = torch.einsum("bqhd,bkhd->bhqk", q, k.repeat_interleave(rep, 2)) * SCALE
    s = s.masked_fill(~mask.dense(), float("-inf"))
    lse = torch.logsumexp(s, -1)
    out = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, -1), v.repeat_interleave(rep, 2))
    out.backward(dout)
    return out.detach(), lse.detach(), q.grad, k.grad, v.grad


@pytest.mark.parametrize("kernel_name", ["flash2", "flash3", "flash4"])
@pytest.mark.parametrize("name", ["causal", "sliding_window_causal", "causal_document", "full_document"])
def test_ring_of_steps_matches_dense_attention(kernel_name, name, monkeypatch):
    """Rank by rank, every (q rank, kv rank) step through the real tile cutter and the adapter's
    step functions over a stand-in library; out/lse merged and gradients summed here."""
    kernel = kernels.create(kernel_name)
    monkeypatch.setattr(type(kernel), "_ready", lambda self, shape: None)
    monkeypatch.setattr(type(kernel), "has_steps", lambda self, device_type: True)
    monkeypatch.setattr(type(kernel), "_step_functions", lambda self: LIBS[kernel_name])
    seqlen, world = 64, 2
    mask = small_mask(name, seqlen)
    g = torch.Generator().manual_seed(0)
    b, hq, hk, d = SHAPE.batch, SHAPE.heads_q, SHAPE.heads_kv, SHAPE.head_dim
    q, dout = (torch.randn(b, seqlen, hq, d, generator=g, dtype=torch.float64) for _ in range(2))
    k, v = (torch.randn(b, seqlen, hk, d, generator=g, dtype=torch.float64) for _ in range(2))
    ref_out, ref_lse, ref_dq, ref_dk, ref_dv = _ring_reference(mask, q, k, v, dout)
    shard = zigzag(seqlen, world) if mask.doc_lens is None else doc_zigzag(mask, world)
    rows = [torch.cat([torch.arange(a, z) for a, z in shard.ranges[r]]) for r in range(world)]
    cache = StepCache(kernel, SHAPE)
    dk, dv = torch.zeros_like(k), torch.zeros_like(v)
    for r in range(world):
        ql = q[:, rows[r]]
        parts = []  # (tile, kv rank, out, lse) of every step
        for t in range(world):
            kl, vl = k[:, rows[t]], v[:, rows[t]]
            for tile in make_tiles(mask, shard.runs(r), shard.runs(t), cache):
                o, lse = tile.fns.fwd(
                    ql[:, tile.q0 : tile.q1], kl[:, tile.k0 : tile.k1], vl[:, tile.k0 : tile.k1]
                )
                parts.append((tile, t, o, lse))
        lse_all = torch.full((b, hq, rows[r].numel()), float("-inf"), dtype=torch.float64)
        for tile, _, _, lse in parts:
            seg = lse_all[:, :, tile.q0 : tile.q1]
            lse_all[:, :, tile.q0 : tile.q1] = torch.logaddexp(seg, lse)
        out = torch.zeros_like(ql)
        for tile, _, o, lse in parts:
            w = torch.exp(lse - lse_all[:, :, tile.q0 : tile.q1]).nan_to_num(0.0)
            out[:, tile.q0 : tile.q1] += o * w.permute(0, 2, 1)[..., None]
        torch.testing.assert_close(out, ref_out[:, rows[r]], atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(lse_all, ref_lse[:, :, rows[r]], atol=1e-10, rtol=1e-10)
        dq = torch.zeros_like(ql)
        do = dout[:, rows[r]]
        for tile, t, _, _ in parts:
            kl, vl = k[:, rows[t]], v[:, rows[t]]
            sl = slice(tile.q0, tile.q1)
            gq, gk, gv = tile.fns.bwd(
                do[:, sl],
                ql[:, sl],
                kl[:, tile.k0 : tile.k1],
                vl[:, tile.k0 : tile.k1],
                out[:, sl],
                lse_all[:, :, sl],
            )
            dq[:, sl] += gq
            dk[:, rows[t][tile.k0 : tile.k1]] += gk
            dv[:, rows[t][tile.k0 : tile.k1]] += gv
        torch.testing.assert_close(dq, ref_dq[:, rows[r]], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(dk, ref_dk, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(dv, ref_dv, atol=1e-10, rtol=1e-10)
    assert any("varlen" in f for f in cache.forms)


@pytest.mark.parametrize("name", names())
def test_mask_mod_intervals_reproduce_the_mask(name):
    """flash4's mask_mod form: row r sees [lo_j[r], hi_j[r]) for each aux pair (the mask_mod's
    rule, written here), padded rows see nothing; or Unsupported naming the interval count."""
    mask = small_mask(name, 100)
    try:
        form = interval_form(mask)
    except Unsupported as e:
        assert "disjoint key ranges" in str(e) and name == "block_sparse"
        return
    aux = form.aux()
    assert len(aux) == 2 * form.intervals and all(a.dtype.name == "int32" and a.size == 128 for a in aux)
    c = torch.arange(mask.seqlen_k)[None, :]
    vis = torch.zeros(128, mask.seqlen_k, dtype=torch.bool)
    for lo, hi in zip(aux[0::2], aux[1::2], strict=True):
        vis |= (c >= torch.from_numpy(lo)[:, None].long()) & (c < torch.from_numpy(hi)[:, None].long())
    assert torch.equal(vis[: mask.seqlen_q], mask.dense()) and not vis[mask.seqlen_q :].any()


def test_fa4_conflict_reasons():
    assert fa4_conflict({"flash-attn": None, "flash-attn-4": "4.0.0b36"}, None) is None
    assert "flash-attn-4 not installed" in fa4_conflict({"flash-attn": None, "flash-attn-4": None}, None)
    why = fa4_conflict({"flash-attn": "2.8.3", "flash-attn-4": None}, "ImportError: x")
    assert "flash-attn 2.8.3's old copy" in why
    why = fa4_conflict({"flash-attn": "2.8.3", "flash-attn-4": "4.0.0b36"}, "AttributeError: _flash_attn_fwd")
    assert "both install flash_attn/cute" in why and "2.8.3" in why


def test_flash3_needs_cuda_and_flash4_names_its_interval_limit():
    ok, why = kernels.create("flash3").available(CPU)
    assert not ok and "CUDA" in why
    with pytest.raises(Unsupported, match="disjoint key ranges"):
        kernels.create("flash4").expressed(small_mask("block_sparse", 256))


def test_step_fns_need_the_step_form_before_the_library():
    # A sub-mask no single window covers is Unsupported on CPU, before any import or device check.
    from lcab.masks.slices import AttnMask, Slice

    mask = AttnMask((Slice(0, 3, 0, 2), Slice(4, 7, 3, 9, "causal")), 7, 9)
    for name in ("flash2", "flash3", "flash4"):
        with pytest.raises(Unsupported):
            kernels.create(name).step_fns(mask, SHAPE)
    step = flash_step(AttnMask((Slice(0, 6, 0, 6, "causal"),), 6, 6), 1)
    fns = flash_step_fns(step, dataclasses.replace(SHAPE, batch=1), *LIBS["flash4"])
    assert "varlen x1+causal" in fns.form
