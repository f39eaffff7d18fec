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


class RowParts:
    """Partial results over row ranges of whole buffers (one or more tensors, each with its row
    dimension), combined without whole-buffer work: a result over rows nothing reached yet is
    kept as it came (no fp32 buffer, no copy); one over rows that hold a result goes to an
    accumulation-dtype "region" over only the overlapping rows (widened as needed; the rows a
    kept result has inside it are cast in, the rest of it stays as it came); result() writes the
    kept pieces and the region into one buffer per tensor, or, when a first result covered every
    row, the region into that result (no new buffer). Subclasses say how a result combines
    into the region (LSE merge, sum) and what a row nothing reached holds."""

    row_dims: tuple[int, ...] = ()
    empty: tuple[float, ...] = ()

    def __init__(self, shapes: tuple[tuple[int, ...], ...], dtype: torch.dtype, device) -> None:
        self.shapes, self.dtype, self.device = shapes, dtype, device
        self.acc = acc_dtype(dtype)
        self.rows = shapes[0][self.row_dims[0]]
        self.pieces: list[tuple[int, int, tuple[torch.Tensor, ...]]] = []  # disjoint, as they came
        self.home: tuple[torch.Tensor, ...] | None = None  # a first result over every row
        self.lo = self.hi = 0  # rows [lo, hi) of the region
        self.region: tuple[torch.Tensor, ...] | None = None

    def _rows(self, ts, a: int, b: int) -> tuple[torch.Tensor, ...]:
        return tuple(t.narrow(d, a, b - a) for t, d in zip(ts, self.row_dims, strict=True))

    def _put(self, ts, q0: int, q1: int) -> tuple[torch.Tensor, ...] | None:
        """Keep ts for rows [q0, q1) if nothing reached them (None), else the region's rows."""
        in_region = self.region is not None and q0 < self.hi and self.lo < q1
        if not in_region and not any(q0 < p1 and p0 < q1 for p0, p1, _ in self.pieces):
            self.pieces.append((q0, q1, tuple(ts)))
            if (q0, q1) == (0, self.rows):
                self.home = tuple(ts)
            return None
        self._cover(q0, q1)
        return self._rows(self.region, q0 - self.lo, q1 - self.lo)

    def _buffers(self, n: int, dtypes) -> tuple[torch.Tensor, ...]:
        shapes = [list(s) for s in self.shapes]
        for s, d in zip(shapes, self.row_dims, strict=True):
            s[d] = n
        return tuple(
            torch.empty(s, dtype=dt, device=self.device) for s, dt in zip(shapes, dtypes, strict=True)
        )

    def _cover(self, q0: int, q1: int) -> None:
        if self.region is not None and self.lo <= q0 and q1 <= self.hi:
            return
        lo, hi = (q0, q1) if self.region is None else (min(q0, self.lo), max(q1, self.hi))
        region = self._buffers(hi - lo, [self.acc] * len(self.shapes))
        filled = [] if self.region is None else [(self.lo, self.hi, self.region)]
        kept = []
        for p0, p1, ts in self.pieces:
            a, z = max(p0, lo), min(p1, hi)
            if a >= z:
                kept.append((p0, p1, ts))
                continue
            filled.append((a, z, self._rows(ts, a - p0, z - p0)))
            kept += [(p0, a, self._rows(ts, 0, a - p0))] if p0 < a else []
            kept += [(z, p1, self._rows(ts, z - p0, p1 - p0))] if z < p1 else []
        self._assemble(region, lo, filled)
        self.pieces, self.lo, self.hi, self.region = kept, lo, hi, region

    def _assemble(self, bufs, lo: int, parts) -> None:
        """Write disjoint row ranges into bufs (which start at row lo); gaps get `empty`."""
        n = bufs[0].shape[self.row_dims[0]]
        at = lo
        for r0, r1, ts in [*sorted(parts, key=lambda p: p[0]), (lo + n, lo + n, None)]:
            if at < r0:
                for dst, fill in zip(self._rows(bufs, at - lo, r0 - lo), self.empty, strict=True):
                    dst.fill_(fill)
            if ts is not None:
                for dst, src in zip(self._rows(bufs, r0 - lo, r1 - lo), ts, strict=True):
                    dst.copy_(src)
            at = r1

    def _result(self, dtypes) -> tuple[torch.Tensor, ...]:
        if self.home is not None and self.home[0].dtype == dtypes[0]:
            # Every row outside the region is still the first result's: write the region into it.
            bufs = tuple(t.to(dt) for t, dt in zip(self.home, dtypes, strict=True))
            if self.region is not None:
                for dst, src in zip(self._rows(bufs, self.lo, self.hi), self.region, strict=True):
                    dst.copy_(src)
            return bufs
        parts = [*self.pieces, *([(self.lo, self.hi, self.region)] if self.region is not None else [])]
        if len(parts) == 1 and parts[0][:2] == (0, self.rows):
            return tuple(t.to(dt) for t, dt in zip(parts[0][2], dtypes, strict=True))
        bufs = self._buffers(self.rows, dtypes)
        self._assemble(bufs, 0, parts)
        return bufs


class LseAccumulator(RowParts):
    """Running (out, lse) over a [B, S, H, D] query buffer, merged by LSE in fp32 where a row is
    reached more than once (RowParts). At 16K tokens x 64 heads x d128 a whole-buffer fp32
    accumulator moves ~2.1 GB per forward (fill 0.54 GB, copy-in 0.27 + 0.54, cast-out 0.54 +
    0.27): a zigzag ring step that touches few rows pays for those rows only, and calls on
    disjoint rows (all-gather CP: one call per query run) pay one bf16 copy. The numbers are
    those of a whole fp32 buffer: rows reached once are that result, rows reached more than
    once are merged in fp32 and rounded once."""

    row_dims = (1, 2)
    empty = (0.0, float("-inf"))

    def __init__(self, q: torch.Tensor) -> None:
        b, s, h, _ = q.shape
        super().__init__((tuple(q.shape), (b, h, s)), q.dtype, q.device)

    def add(
        self, out: torch.Tensor, lse: torch.Tensor, q0: int = 0, q1: int | None = None, last: bool = False
    ) -> None:
        """`last`: no later result reaches these rows, so where they hold exactly one earlier
        result (a kept piece) the merge goes straight into it: fp32 maths, rounded once, as the
        region would round it, without the region's cast in and out."""
        q1 = self.rows if q1 is None else q1
        piece = self._final_piece(q0, q1) if last else None
        if piece is not None:
            merge_final(*piece, out, lse)
            return
        region = self._put((out, lse), q0, q1)
        if region is not None:
            merge_into(*region, out, lse)

    def _final_piece(self, q0: int, q1: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Rows [q0, q1) of the one kept piece that holds all of them (never merged), if its LSE
        is in the accumulation dtype; else None."""
        if self.region is not None and q0 < self.hi and self.lo < q1:
            return None
        for p0, p1, (o, lse) in self.pieces:
            if p0 <= q0 and q1 <= p1 and lse.dtype == self.acc:
                return o.narrow(1, q0 - p0, q1 - q0), lse.narrow(2, q0 - p0, q1 - q0)
        return None

    def result(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(out in `dtype`, default the query's, lse in the accumulation dtype) over every row;
        rows no partial result reached: out 0, lse -inf."""
        return self._result((self.dtype if dtype is None else dtype, self.acc))

    @property
    def out(self) -> torch.Tensor:
        """Every row's merged output in the accumulation dtype (fp32 / fp64)."""
        return self.result(self.acc)[0]

    @property
    def lse(self) -> torch.Tensor:
        return self.result(self.acc)[1]


class RowSum(RowParts):
    """dQ over a [B, S, H, D] query buffer: a step's gradient for rows no step reached yet is
    kept as it came, later ones add in fp32 over the rows they touch (not a zero-filled fp32
    buffer the size of q, added into by every call and cast at the end)."""

    row_dims = (1,)
    empty = (0.0,)

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device) -> None:
        super().__init__((tuple(shape),), dtype, device)

    def add(self, g: torch.Tensor, q0: int, q1: int) -> None:
        region = self._put((g,), q0, q1)
        if region is not None:
            region[0].add_(g)

    def result(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self._result((self.dtype if dtype is None else dtype,))[0]


def _merge(acc_o: torch.Tensor, acc_l: torch.Tensor, out: torch.Tensor, lse: torch.Tensor) -> None:
    lse = lse.to(acc_l.dtype)
    new = torch.logaddexp(acc_l, lse)
    safe = torch.where(torch.isinf(new), 0, new)
    w_old = torch.exp(acc_l - safe).transpose(1, 2)[..., None]
    w_new = torch.exp(lse - safe).transpose(1, 2)[..., None]
    acc_o.copy_(w_old * acc_o + w_new * out.to(acc_o.dtype))
    acc_l.copy_(new)


def merge_final(o_dst: torch.Tensor, l_dst: torch.Tensor, out: torch.Tensor, lse: torch.Tensor) -> None:
    """In place into a first result (o_dst in the input dtype, l_dst in the accumulation dtype):
    merged in the accumulation dtype and rounded once, the numbers merge_into on a cast-in copy
    followed by a cast-out gives."""
    fused = o_dst.is_cuda and l_dst.dtype == torch.float32 and o_dst.dtype in (torch.float32, torch.bfloat16)
    rows = _triton_merge_rows() if fused else None
    if rows is not None:
        rows(o_dst, l_dst, out, lse)
        return
    a_o = o_dst.to(l_dst.dtype)
    _merge(a_o, l_dst, out, lse)
    o_dst.copy_(a_o)


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
