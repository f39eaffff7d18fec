"""Merging partial attention results by their log-sum-exp, in fp32 (fp64 for fp32/fp64 inputs).

Two partial results over disjoint key sets, (o1, l1) and (o2, l2), combine as
l = log(e^l1 + e^l2), o = e^(l1 - l) o1 + e^(l2 - l) o2. Rows where both are empty keep
out 0, lse -inf. Doing this in the input dtype (bf16) is a known source of ring drift.
"""

from __future__ import annotations

import functools

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for bf16/fp16 (the point of merging in fp32); fp64 for fp32 and fp64 inputs, so an
    fp32 run's merge adds no rounding on top of its per-step kernels."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else torch.float64


class LseAccumulator:
    """Running (out, lse) over a [B, S, H, D] query buffer, merged row range by row range."""

    def __init__(self, q: torch.Tensor) -> None:
        b, s, h, d = q.shape
        dt = acc_dtype(q.dtype)
        self.out = torch.zeros(b, s, h, d, dtype=dt, device=q.device)
        self.lse = torch.full((b, h, s), float("-inf"), dtype=dt, device=q.device)
        # Nothing merged yet: a first partial result over all rows is copied, not merged.
        self.fresh = True

    def add(self, out: torch.Tensor, lse: torch.Tensor, q0: int = 0, q1: int | None = None) -> None:
        q1 = self.out.shape[1] if q1 is None else q1
        whole, self.fresh = self.fresh and q0 == 0 and q1 == self.out.shape[1], False
        if whole:
            self.out.copy_(out)
            self.lse.copy_(lse)
            return
        merge_into(self.out[:, q0:q1], self.lse[:, :, q0:q1], out, lse)


def _merge(acc_o: torch.Tensor, acc_l: torch.Tensor, out: torch.Tensor, lse: torch.Tensor) -> None:
    lse = lse.to(acc_l.dtype)
    new = torch.logaddexp(acc_l, lse)
    safe = torch.where(torch.isinf(new), 0, new)
    w_old = torch.exp(acc_l - safe).transpose(1, 2)[..., None]
    w_new = torch.exp(lse - safe).transpose(1, 2)[..., None]
    acc_o.copy_(w_old * acc_o + w_new * out.to(acc_o.dtype))
    acc_l.copy_(new)


def merge_into(acc_o: torch.Tensor, acc_l: torch.Tensor, out: torch.Tensor, lse: torch.Tensor) -> None:
    """In place: (acc_o, acc_l) <- merge((acc_o, acc_l), (out, lse)). On CUDA an fp32 merge is
    one Triton kernel (lcab/cp/merge_triton.py) when Triton imports: eager it is ~6 passes over
    the fp32 buffer."""
    rows = _triton_merge_rows() if acc_o.is_cuda and acc_o.dtype == torch.float32 else None
    if rows is not None:
        rows(acc_o, acc_l, out, lse)
    else:
        _merge(acc_o, acc_l, out, lse)


@functools.cache
def _triton_merge_rows():
    """The Triton merge, or None where Triton is not installed (an optional dependency)."""
    try:
        from lcab.cp.merge_triton import merge_rows
    except ImportError:
        return None
    return merge_rows
