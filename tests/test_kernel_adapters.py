"""flex against an fp64 dense reference on every mask; the GPU-only adapters (flash2, flash3,
cudnn) on this CPU box: unavailable with a reason, Unsupported for masks they cannot express,
and their packing/LSE plumbing run end to end against a stand-in flash-attn with the library's
documented semantics."""

from __future__ import annotations

import itertools
import sys

import pytest
import torch

from lcab import kernels
from lcab.config import ConfigError, mask_config
from lcab.kernels.base import ShapeSpec, Unavailable, Unsupported
from lcab.kernels.flash_family import FlashKernel
from lcab.kernels.varlen_args import cu_seqlens, flash_visible
from lcab.masks import build, names

CPU = torch.device("cpu")
GPU_KERNELS = ("flash2", "flash3", "cudnn")


def small_mask(name: str, seqlen: int):
    cfg = mask_config(dict(name=name, window=8, block=16, max_blocks_per_doc=3, sparse_block=16, seed=1))
    return build(cfg, seqlen)


def reference(q, k, v, dense: torch.Tensor):
    """softmax(Q K^T / sqrt(D), masked) V in float64, GQA by repeating K/V heads; and the LSE."""
    q, k, v = (x.detach().double() for x in (q, k, v))
    rep = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5
    s = s.masked_fill(~dense, float("-inf"))
    lse = torch.logsumexp(s, -1)
    out = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, -1), v)
    return out, lse


def inputs(shape: ShapeSpec, seqlen: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(shape.batch, seqlen, shape.heads_q, shape.head_dim, generator=g, dtype=shape.dtype)
    k = torch.randn(shape.batch, seqlen, shape.heads_kv, shape.head_dim, generator=g, dtype=shape.dtype)
    v = torch.randn(shape.batch, seqlen, shape.heads_kv, shape.head_dim, generator=g, dtype=shape.dtype)
    return q, k, v


SHAPE = ShapeSpec(batch=2, heads_q=4, heads_kv=2, head_dim=16, dtype=torch.float32, device=CPU)
SEQLEN = 77


def test_importing_adapters_does_not_import_optional_packages():
    for name in kernels.names():
        kernels.create(name)  # imports the adapter's module
    for mod in ("flash_attn", "flash_attn_interface", "flash_attn_3", "cudnn"):
        assert mod not in sys.modules, f"{mod} imported at adapter import time"
    assert {"flex", "cudnn", "flash2", "flash3"} <= set(kernels.names())


def test_unknown_kernel_is_one_config_error_listing_the_options():
    with pytest.raises(ConfigError) as e:
        kernels.create("nope")
    line = str(e.value)
    assert "\n" not in line and line.startswith("unknown kernel 'nope'; known: ")
    assert line.endswith(", ".join(kernels.names()))


def test_adapters_are_made_per_config_and_keep_their_options():
    a = kernels.create("flex", {"name": "flex", "block_size": 16, "compile": False})
    b = kernels.create("flex", {"name": "flex"})
    assert a is not b
    assert (a.options.block_size, a.options.compile) == (16, False)
    assert (b.options.block_size, b.options.compile) == (128, True)
    # Keys of the shared kernel schema that are not this kernel's options are not its business.
    assert (
        kernels.create("torch", {"name": "torch", "block_size": 16}).options
        == kernels.create("torch").options
    )


def test_capabilities_decide_before_any_step_is_built():
    """A kernel without CP steps is refused from its capabilities, with the true reason (flex
    returns an LSE; what it lacks is a backward from a given out/lse)."""
    from lcab.cp.tiles import StepCache

    with pytest.raises(Unsupported, match=r"^flex has no CP step functions \(") as e:
        StepCache(kernels.create("flex"), SHAPE)
    assert "no LSE" not in str(e.value)
    for name in ("cudnn", "flash2", "flash3", "flash4"):  # CUDA-only step functions
        with pytest.raises(Unsupported, match=f"^{name} has no CP step functions on cpu "):
            StepCache(kernels.create(name), SHAPE)
    for name in ("torch", "sdpa", "sdpa_math", "sdpa_flash"):
        StepCache(kernels.create(name), SHAPE)


def test_capabilities_are_declared():
    flex = kernels.kernel_class("flex").capabilities
    assert flex.devices == ("cpu", "cuda") and flex.backward_devices == ("cuda",) and flex.steps == ()
    for name in GPU_KERNELS:
        caps = kernels.kernel_class(name).capabilities
        assert caps.devices == ("cuda",) and caps.dtypes == ("bf16", "fp16") and caps.backward
    assert kernels.kernel_class("cudnn").capabilities.steps == ("cuda",)


@pytest.mark.parametrize("name", names())
def test_flex_forward_matches_fp64_reference(name):
    mask = small_mask(name, SEQLEN)
    kernel = kernels.create("flex", {"block_size": 16, "compile": True})
    fn = kernel.prepare(mask, SHAPE)
    assert fn.notes["compiled"] is False  # CPU: compiled flex returns no LSE, so it runs uncompiled
    q, k, v = inputs(SHAPE, SEQLEN)
    out, lse = fn(q, k, v)
    ref_out, ref_lse = reference(q, k, v, mask.dense())
    assert out.shape == q.shape and lse.shape == (SHAPE.batch, SHAPE.heads_q, SEQLEN)
    assert lse.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=2e-5, rtol=2e-5)


def test_flex_backward_is_refused_on_cpu():
    mask = small_mask("causal", SEQLEN)
    fn = kernels.create("flex", {"block_size": 16}).prepare(mask, SHAPE)
    q, k, v = (x.requires_grad_() for x in inputs(SHAPE, SEQLEN))
    out, lse = fn(q, k, v)  # the forward runs on grad-requiring inputs (the harness's fwd mode)
    ref_out, ref_lse = reference(q, k, v, mask.dense())
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=2e-5, rtol=2e-5)
    with pytest.raises(Unsupported, match="no backward on CPU"):
        torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    with torch.no_grad():
        fn(q, k, v)


@pytest.mark.parametrize("name", GPU_KERNELS)
def test_gpu_adapters_are_unavailable_here(name):
    kernel = kernels.create(name)
    for device in (CPU, torch.device("cuda")):
        ok, reason = kernel.available(device)
        assert ok is False and "needs CUDA" in reason


@pytest.mark.parametrize("name", GPU_KERNELS)
def test_gpu_adapters_refuse_inexpressible_masks_without_their_package(name):
    kernel = kernels.create(name)
    mask = small_mask("share_question", SEQLEN)
    with pytest.raises(Unsupported, match=f"^{name} cannot express share_question: .+"):
        kernel.prepare(mask, SHAPE)
    for other in ("block_sparse", "prefix_lm_causal", "global_sliding_window"):
        with pytest.raises(Unsupported, match=f"cannot express {other}"):
            kernel.prepare(small_mask(other, SEQLEN), SHAPE)
    # An expressible mask gets as far as the missing device.
    with pytest.raises(Unavailable, match="needs CUDA"):
        kernel.prepare(small_mask("causal_document", SEQLEN), SHAPE)


# A stand-in for flash-attn with its documented conventions (window_size, causal, LSE [B, H, S]
# dense / [H, total] varlen, return_attn_probs), so the adapter's packing runs end to end here.


def _attend(q, k, v, visible, softmax_scale):
    rep = q.shape[-2] // k.shape[-2]
    k, v = k.repeat_interleave(rep, -2), v.repeat_interleave(rep, -2)
    s = torch.einsum("qhd,khd->hqk", q, k) * softmax_scale
    s = s.masked_fill(~visible, float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v), torch.logsumexp(s, -1)


def fake_flash_attn_func(
    q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), return_attn_probs=False
):
    outs, lses = zip(
        *(
            _attend(q[b], k[b], v[b], flash_visible([q.shape[1]], causal, window_size), softmax_scale)
            for b in range(q.shape[0])
        )
    )
    return torch.stack(outs), torch.stack(lses), None


def fake_flash_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    return_attn_probs=False,
):
    assert torch.equal(cu_seqlens_q, cu_seqlens_k) and cu_seqlens_q.dtype == torch.int32
    cu = cu_seqlens_q.tolist()
    assert max_seqlen_q == max(b - a for a, b in itertools.pairwise(cu))
    lens = [b - a for a, b in itertools.pairwise(cu)]
    out, lse = _attend(q, k, v, flash_visible(lens, causal, window_size), softmax_scale)
    return out, lse, None  # lse [H, total]


@pytest.mark.parametrize(
    "name", ["full", "causal", "sliding_window", "sliding_window_causal", "causal_document"]
)
@pytest.mark.parametrize("kernel_name", ["flash2", "flash3"])
def test_flash_adapter_plumbing_with_a_stand_in_library(kernel_name, name, monkeypatch):
    kernel = kernels.create(kernel_name)
    assert isinstance(kernel, FlashKernel)
    monkeypatch.setattr(type(kernel), "available", lambda self, device: (True, ""))
    monkeypatch.setattr(
        type(kernel), "_functions", lambda self: (fake_flash_attn_func, fake_flash_attn_varlen_func)
    )
    mask = small_mask(name, SEQLEN)
    fn = kernel.prepare(mask, SHAPE)
    if name == "causal_document":
        assert fn.notes["mask_form"].startswith("varlen") and fn.notes["n_docs"] == len(mask.doc_lens)
        assert cu_seqlens(mask.doc_lens)[-1] == SEQLEN
    q, k, v = inputs(SHAPE, SEQLEN)
    out, lse = fn(q, k, v)
    ref_out, ref_lse = reference(q, k, v, mask.dense())
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=2e-5, rtol=2e-5)
