"""Ulysses with its exchanges optionally overlapped (cp.head_chunks): the heads a rank will own are
cut into C chunks; the exchange of chunk c+1's q, k, v is in flight while chunk c's attention
runs, and chunk c's output travels back while chunk c+1 computes. The backward does the same
with dout in and dq, dk, dv back. What stays exposed: the first chunk's exchange in, the last
one's out, and the copies (timed as "layout"); the compute stream's waits on the exchange are
timed as "comm". C = 1 is plain Ulysses (one exchange each way, nothing overlapped).

Measured on two H200s (NCCL all_to_all, cuDNN, S = 32K, 64:8 heads, issue 16): C = 2 and 4 were
slower than C = 1 at full (fwd 538 / 534 vs 567 TFLOPs/s per GPU, bwd 516 / 501 vs 525): the
all-to-all kernels share the SMs with the attention and every chunk adds a point where the two
ranks wait for each other; only causal_document fwd gained at C = 2 (329 vs 302). So the default
is C = 1 and chunking is a knob to measure, not a given.

Chunk c holds, on rank j of the group, heads j*H/U + c*H/(U*C) ... + H/(U*C) of q (and the kv heads
of the same GQA groups), so every chunk is a self-contained attention problem.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcab.config import ConfigError
from lcab.cp.base import Degrees, RunCtx
from lcab.cp.head_exchange import EXCHANGE, Members, Pending, land
from lcab.cp.merge import LseAccumulator, RowSum, acc_dtype
from lcab.cp.tiled_lse import backward_tiles, forward_tiles, last_reach
from lcab.cp.tiles import Tile
from lcab.kernels.base import ShapeSpec


def auto_chunks(heads_kv_local: int, cap: int = 4) -> int:
    """The largest divisor of the kv heads a rank holds that is <= cap (each chunk keeps whole
    GQA groups): cp.head_chunks=0."""
    return max(c for c in range(1, min(cap, heads_kv_local) + 1) if heads_kv_local % c == 0)


@dataclass(frozen=True)
class ChunkAttention:
    """One chunk's attention on head-sharded, globally ordered buffers: one call over the whole
    buffer (`single`) or the plan's tiles with an LSE merge."""

    tiles: tuple[Tile, ...]
    single: bool

    @functools.cached_property
    def last(self) -> list[bool]:
        return last_reach([list(self.tiles)])[0]

    def fwd(self, q, k, v) -> tuple[torch.Tensor, torch.Tensor]:
        if self.single:
            out, lse = self.tiles[0].fns.fwd(q, k, v)
            return out.to(q.dtype), lse
        acc = LseAccumulator(q)
        forward_tiles(q, (k, v), list(self.tiles), acc, self.last)
        return acc.result(q.dtype)

    def bwd(self, dout, q, k, v, out, lse) -> tuple[torch.Tensor, ...]:
        if self.single:
            return self.tiles[0].fns.bwd(dout, q, k, v, out, lse)
        adt = acc_dtype(q.dtype)
        dq = RowSum(q.shape, q.dtype, q.device)
        dkv = (
            torch.zeros(k.shape, dtype=adt, device=k.device),
            torch.zeros(v.shape, dtype=adt, device=v.device),
        )
        backward_tiles(dout, q, (k, v), out, lse, list(self.tiles), dq, dkv)
        return dq.result(adt), dkv[0], dkv[1]


@dataclass(frozen=True)
class TokenOrder:
    """Between a Ulysses group's exchange buffer (each rank's runs back to back) and global order
    (lcab.cp.strategies.ulysses.token_order); both None: the orders agree (or do not matter)."""

    perm: torch.Tensor | None = None  # buffer position of each global token
    unperm: torch.Tensor | None = None  # global token of each buffer position; None = padded

    def to_global(self, ts, run: RunCtx) -> list[torch.Tensor]:
        if self.perm is None:
            return list(ts)
        with run.timer.region("layout"):
            return [t.index_select(1, self.perm) for t in ts]

    def to_buffer(self, ts, run: RunCtx, buffer_len: int) -> list[torch.Tensor]:
        """Back to buffer order; padding positions (no global token) get zeros."""
        if self.perm is None:
            return list(ts)
        with run.timer.region("layout"):
            if self.unperm is not None:
                return [t.index_select(1, self.unperm) for t in ts]
            return [t.new_zeros(t.shape[0], buffer_len, *t.shape[2:]).index_copy(1, self.perm, t) for t in ts]


@dataclass(frozen=True)
class Pipeline:
    """What the pipelined exchange needs: the group, chunk count, the attention of one chunk,
    the exchange, and the token order between the exchange buffer and global order."""

    members: Members
    chunks: int
    attn: ChunkAttention
    exchange: str  # a name in lcab.cp.head_exchange.EXCHANGE
    order: TokenOrder = TokenOrder()


def _pipelined(
    n: int,
    send: Callable[[int], Pending],
    compute: Callable[[int, list[torch.Tensor]], list[torch.Tensor]],
    back: Callable[[int, list[torch.Tensor]], Pending],
    land: Callable[[int, list], None],
) -> None:
    """Chunk c+1's exchange in flight during chunk c's compute; chunk c's results travel back
    while chunk c+1 computes and are landed one iteration later."""
    inbound = send(0)
    outbound: tuple[int, Pending] | None = None
    for c in range(n):
        nxt = send(c + 1) if c + 1 < n else None
        results = compute(c, inbound.wait())
        ex = back(c, results)
        if outbound is not None:
            land(outbound[0], outbound[1].wait())
        outbound, inbound = (c, ex), nxt
    land(outbound[0], outbound[1].wait())


class PipelinedUlysses(torch.autograd.Function):
    """q [B, L, H, D], k/v [B, L, Hkv, D] (sequence-sharded) -> out [B, L, H, D]."""

    @staticmethod
    def forward(ctx, q, k, v, pipe: Pipeline, run: RunCtx):
        g, m, n, ex = run.groups.get("uly"), pipe.members, pipe.chunks, EXCHANGE[pipe.exchange]
        out = torch.empty_like(q)
        saved: list[torch.Tensor] = []

        def compute(c, heads):
            qc, kc, vc = pipe.order.to_global(heads, run)
            with run.timer:
                oc, lse = pipe.attn.fwd(qc, kc, vc)
            saved.extend((qc, kc, vc, oc, lse))
            return pipe.order.to_buffer([oc], run, heads[0].shape[1])

        _pipelined(
            n,
            send=lambda c: ex.to_heads((q, k, v), ("a2a_q", "a2a_k", "a2a_v"), m, n, c, run, g),
            compute=compute,
            back=lambda c, res: ex.to_seq(res, ("a2a_out",), m, run, g),
            land=lambda c, parts: _land(run, (out,), parts, n, c),
        )
        ctx.save_for_backward(*saved)
        ctx.pipe, ctx.run, ctx.kshape = pipe, run, k.shape
        return out

    @staticmethod
    def backward(ctx, dout):
        pipe, run = ctx.pipe, ctx.run
        g, m, n, ex = run.groups.get("uly"), pipe.members, pipe.chunks, EXCHANGE[pipe.exchange]
        saved = ctx.saved_tensors
        dout = dout.contiguous()
        dq = torch.empty(dout.shape, dtype=dout.dtype, device=dout.device)
        dk = torch.empty(ctx.kshape, dtype=dout.dtype, device=dout.device)
        dv = torch.empty_like(dk)

        def compute(c, heads):
            (doc,) = pipe.order.to_global(heads, run)
            qc, kc, vc, oc, lse = saved[5 * c : 5 * c + 5]
            with run.timer:
                grads = pipe.attn.bwd(doc, qc, kc, vc, oc, lse)
            with run.timer.region("layout"):
                grads = [t.to(dout.dtype) for t in grads]
            return pipe.order.to_buffer(grads, run, heads[0].shape[1])

        _pipelined(
            n,
            send=lambda c: ex.to_heads((dout,), ("a2a_out_bwd",), m, n, c, run, g),
            compute=compute,
            back=lambda c, res: ex.to_seq(res, ("a2a_q_bwd", "a2a_k_bwd", "a2a_v_bwd"), m, run, g),
            land=lambda c, parts: _land(run, (dq, dk, dv), parts, n, c),
        )
        return dq, dk, dv, None, None


def _land(run: RunCtx, dsts, parts, n: int, c: int) -> None:
    with run.timer.region("layout"):
        for dst, p in zip(dsts, parts, strict=True):
            land(dst, p, n, c)


def resolve_chunks(requested: int, deg: Degrees, shape: ShapeSpec) -> int:
    """cp.head_chunks checked against the kv heads a rank holds after the all-to-all (0 = auto)."""
    kv = shape.heads_kv * deg.kv_replicas // deg.ulysses
    if requested <= 0:
        return auto_chunks(kv)
    if kv % requested:
        raise ConfigError(
            f"head_chunks {requested} does not divide the {kv} kv heads a rank holds after the all-to-all"
        )
    return requested
