"""Eager QK^T -> masked softmax -> PV with a dense boolean mask: lcab's reference (harness.reference),
the `torch` kernel (adapters/torch.py) and the exact per-step formula of CP steps."""

from __future__ import annotations

import torch

from lcab.harness.reference import eager_attention  # noqa: F401  (the reference, re-exported)
from lcab.kernels.base import ShapeSpec, StepFns, scale
from lcab.masks.slices import AttnMask


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def eager_step_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward of one step in fp32 (fp64 for fp64 inputs); lse keeps that precision so a ring
    merge in fp64 stays exact to fp64 (an fp32 lse would cost fp64 runs ~1e-8)."""
    cd = _compute_dtype(q.dtype)
    hq, hkv = q.shape[2], k.shape[2]
    qh, kh, vh = (t.to(cd).transpose(1, 2) for t in (q, k, v))
    if hq != hkv:
        kh, vh = kh.repeat_interleave(hq // hkv, 1), vh.repeat_interleave(hq // hkv, 1)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    finite = torch.isfinite(lse)
    p = torch.exp(s - torch.where(finite, lse, 0)[..., None])
    if mask is not None:
        p = torch.where(mask, p, 0)
    out = torch.matmul(p, vh).transpose(1, 2)
    return out.to(q.dtype), torch.where(finite, lse, float("-inf"))


def eager_step_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlashAttention's backward formula on one (q block, k block) given the GLOBAL out and lse.

    P = exp(S - lse) is this block's share of the globally normalised softmax, so summing the
    blocks' dq, dk, dv gives the gradients of the whole attention. Computed in fp32 (or fp64).
    """
    cd = _compute_dtype(q.dtype)
    hq, hkv = q.shape[2], k.shape[2]
    rep = hq // hkv
    qh, kh, vh, doh, oh = (t.to(cd).transpose(1, 2) for t in (q, k, v, dout, out))
    if rep > 1:
        kh, vh = kh.repeat_interleave(rep, 1), vh.repeat_interleave(rep, 1)
    sc = scale(q.shape[-1])
    s = torch.matmul(qh, kh.transpose(-1, -2)) * sc
    lse = lse.to(cd)
    finite = torch.isfinite(lse)
    p = torch.exp(s - torch.where(finite, lse, 0)[..., None])
    keep = finite[..., None] if mask is None else (mask & finite[..., None])
    p = torch.where(keep, p, 0)
    dv = torch.matmul(p.transpose(-1, -2), doh)
    dp = torch.matmul(doh, vh.transpose(-1, -2))
    delta = (doh * oh).sum(-1, keepdim=True)
    ds = p * (dp - delta)
    dq = torch.matmul(ds, kh) * sc
    dk = torch.matmul(ds.transpose(-1, -2), qh) * sc
    if rep > 1:
        b, _, sk, d = dk.shape
        dk = dk.view(b, hkv, rep, sk, d).sum(2)
        dv = dv.view(b, hkv, rep, sk, d).sum(2)
    return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)


def eager_step_fns(mask: AttnMask, shape: ShapeSpec, form: str = "dense") -> StepFns:
    """Per-step (fwd, bwd) with the exact eager formula; a full mask needs no dense tensor."""
    from lcab.masks.forms import is_full

    dense = None if is_full(mask) else mask.dense(shape.device)

    def fwd(q, k, v):
        with torch.no_grad():
            return eager_step_forward(q, k, v, dense)

    def bwd(dout, q, k, v, out, lse):
        with torch.no_grad():
            return eager_step_backward(dout, q, k, v, out, lse, dense)

    return StepFns(fwd, bwd, form if dense is not None else "none")
