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
    """Running (out, lse) over a [B, S, H, D] query buffer, merged row range by row range.

    A first partial result over every row is kept as it came (bf16 out, the kernel's LSE): no
    zero-filled fp32 buffer, no copy. Later partial results merge in fp32 into a buffer over only
    the rows they touch, widened as needed; result() writes those rows back. At 16K tokens x 64
    heads x d128 a whole-buffer fp32 accumulator moves ~2.1 GB per forward (counted, not timed:
    fill 0.54 GB, copy-in 0.27 + 0.54, cast-out 0.54 + 0.27); a zigzag ring step that touches few
    rows now pays for those rows only.
    The numbers are the same as with a whole fp32 buffer: untouched rows are the first result,
    touched rows are merged in fp32 and rounded once."""

    def __init__(self, q: torch.Tensor) -> None:
        self.shape, self.dtype, self.device = tuple(q.shape), q.dtype, q.device
        self.acc = acc_dtype(q.dtype)
        self.base: tuple[torch.Tensor, torch.Tensor] | None = None  # the whole first result
        self.lo = self.hi = 0  # rows [lo, hi) of the fp32 merge buffers
        self.m_out: torch.Tensor | None = None
        self.m_lse: torch.Tensor | None = None

    def add(self, out: torch.Tensor, lse: torch.Tensor, q0: int = 0, q1: int | None = None) -> None:
        q1 = self.shape[1] if q1 is None else q1
        if self.base is None and self.m_out is None and q0 == 0 and q1 == self.shape[1]:
            self.base = (out, lse)
            return
        self._cover(q0, q1)
        a, b = q0 - self.lo, q1 - self.lo
        merge_into(self.m_out[:, a:b], self.m_lse[:, :, a:b], out, lse)

    def _initial(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 (out, lse) of rows [lo, hi) before any later merge: the first result, or empty."""
        if self.base is not None:
            return self.base[0][:, lo:hi].to(self.acc), self.base[1][:, :, lo:hi].to(self.acc)
        b, _, h, d = self.shape
        out = torch.zeros(b, hi - lo, h, d, dtype=self.acc, device=self.device)
        return out, torch.full((b, h, hi - lo), float("-inf"), dtype=self.acc, device=self.device)

    def _cover(self, q0: int, q1: int) -> None:
        if self.m_out is not None and self.lo <= q0 and q1 <= self.hi:
            return
        lo, hi = (q0, q1) if self.m_out is None else (min(q0, self.lo), max(q1, self.hi))
        out, lse = self._initial(lo, hi)
        if self.m_out is not None:
            out[:, self.lo - lo : self.hi - lo] = self.m_out
            lse[:, :, self.lo - lo : self.hi - lo] = self.m_lse
        self.lo, self.hi, self.m_out, self.m_lse = lo, hi, out, lse

    def result(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(out in `dtype`, default the query's, lse in the accumulation dtype) over every row;
        rows no partial result reached: out 0, lse -inf."""
        dtype = self.dtype if dtype is None else dtype
        if self.m_out is not None and self.base is None and (self.lo, self.hi) == (0, self.shape[1]):
            return self.m_out.to(dtype), self.m_lse
        if self.base is None:
            self.base = self._zeros()
        # .to() copies only when the dtype differs; the first result is this accumulator's own.
        out, lse = self.base[0].to(dtype), self.base[1].to(self.acc)
        if self.m_out is not None:
            out[:, self.lo : self.hi] = self.m_out
            lse[:, :, self.lo : self.hi] = self.m_lse
        return out, lse

    def _zeros(self) -> tuple[torch.Tensor, torch.Tensor]:
        b, s, h, d = self.shape
        out = torch.zeros(b, s, h, d, dtype=self.dtype, device=self.device)
        return out, torch.full((b, h, s), float("-inf"), dtype=self.acc, device=self.device)

    @property
    def out(self) -> torch.Tensor:
        """Every row's merged output in the accumulation dtype (fp32 / fp64)."""
        return self.result(self.acc)[0]

    @property
    def lse(self) -> torch.Tensor:
        return self.result(self.acc)[1]


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
