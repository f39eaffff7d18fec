"""Reference attention: eager QK^T -> masked softmax -> PV with a dense boolean mask, in the
inputs' dtype. Harness code, independent of the adapters it judges (lcab.harness.verify runs it
in fp64 and in the kernel's dtype); the `torch` kernel adapter exposes the same function."""

from __future__ import annotations

import torch


def eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention in the inputs' dtype. Rows with no visible key give out = 0, lse = -inf."""
    hq, hkv = q.shape[2], k.shape[2]
    if hq != hkv:  # GQA: query head h reads kv head h // (hq // hkv)
        k = k.repeat_interleave(hq // hkv, dim=2)
        v = v.repeat_interleave(hq // hkv, dim=2)
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, S, D]
    s = torch.matmul(qh, kh.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s.float() if s.dtype in (torch.bfloat16, torch.float16) else s, dim=-1)
    finite = torch.isfinite(lse)
    p = torch.exp(s - torch.where(finite, lse, 0).to(s.dtype)[..., None])
    if mask is not None:
        p = torch.where(mask, p, 0)
    out = torch.matmul(p.to(vh.dtype), vh).transpose(1, 2)
    return out, torch.where(finite, lse, float("-inf")).float()
