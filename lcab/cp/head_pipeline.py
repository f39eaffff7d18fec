"""Ulysses with its all-to-alls overlapped: the heads a rank will own are cut into C chunks; the
all-to-all of chunk c+1's q, k, v is in flight while chunk c's attention runs, and chunk c's
output travels back while chunk c+1 computes. The backward does the same with dout in and
dq, dk, dv back. What stays exposed: the first chunk's exchange in, the last one's out, and the
send-buffer copies (timed as "layout"); the compute stream's waits on NCCL are timed as "comm".

Issue 16: unchunked, nothing overlapped the four all_to_all of a forward (1.5 ms of 31 ms at
S = 32K, world 2, on H200), so Ulysses stayed below 0.92 of one GPU on full and causal.

Chunk c holds, on rank j of the group, heads j*H/U + c*H/(U*C) ... + H/(U*C) of q (and the kv heads
of the same GQA groups), so every chunk is a self-contained attention problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcab.config import ConfigError
from lcab.cp.base import Degrees, RunCtx
from lcab.cp.merge import LseAccumulator, RowSum, acc_dtype
from lcab.cp.tiled_lse import backward_tiles, forward_tiles
from lcab.cp.tiles import Tile
from lcab.kernels.base import ShapeSpec


def auto_chunks(heads_kv_local: int, cap: int = 4) -> int:
    """The largest divisor of the kv heads a rank holds that is <= cap (each chunk keeps whole
    GQA groups; four chunks hide all but a quarter of one exchange)."""
    return max(c for c in range(1, min(cap, heads_kv_local) + 1) if heads_kv_local % c == 0)


def send_buffer(x: torch.Tensor, u: int, n: int, c: int) -> torch.Tensor:
    """[B, L, H, D] (my tokens, all heads) -> contiguous [U, B, L, h, D]: destination j gets its
    heads' chunk c (h = H / (U * n))."""
    b, seq, h, d = x.shape
    return x.reshape(b, seq, u, n, h // (u * n), d)[:, :, :, c].permute(2, 0, 1, 3, 4).contiguous()


def as_heads(recv: torch.Tensor) -> torch.Tensor:
    """Received [U(src), B, L, h, D] -> [B, U*L, h, D] (the group's tokens in source order; a view
    at batch 1)."""
    u, b, seq, h, d = recv.shape
    return recv.permute(1, 0, 2, 3, 4).reshape(b, u * seq, h, d)


def return_buffer(y: torch.Tensor, u: int) -> torch.Tensor:
    """[B, U*L, h, D] -> contiguous [U, B, L, h, D]: source j's tokens go back to j (no copy at
    batch 1)."""
    b, useq, h, d = y.shape
    return y.reshape(b, u, useq // u, h, d).permute(1, 0, 2, 3, 4).contiguous()


def put_chunk(dst: torch.Tensor, recv: torch.Tensor, n: int, c: int) -> None:
    """Write received [U(src), B, L, h, D] (my tokens, src's heads of chunk c) into dst [B, L, H, D]."""
    b, seq, h, d = dst.shape
    u = recv.shape[0]
    dst.view(b, seq, u, n, h // (u * n), d)[:, :, :, c].copy_(recv.permute(1, 2, 0, 3, 4))


@dataclass(frozen=True)
class ChunkAttention:
    """One chunk's attention on head-sharded, globally ordered buffers: one call over the whole
    buffer (`single`) or the plan's tiles with an LSE merge."""

    tiles: tuple[Tile, ...]
    single: bool

    def fwd(self, q, k, v) -> tuple[torch.Tensor, torch.Tensor]:
        if self.single:
            out, lse = self.tiles[0].fns.fwd(q, k, v)
            return out.to(q.dtype), lse
        acc = LseAccumulator(q)
        forward_tiles(q, (k, v), list(self.tiles), acc)
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
class Pipeline:
    """What the pipelined exchange needs: degree, chunk count, the attention of one chunk, and
    the token order between the all-to-all buffer and global order."""

    u: int
    chunks: int
    attn: ChunkAttention
    perm: torch.Tensor | None = None  # buffer position of each global token; None = identity
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


class _Exchange:
    """Async all_to_all of one chunk's tensors; wait() returns them in head layout."""

    def __init__(self, tensors, kinds, run: RunCtx, group) -> None:
        self.run, self.recv, self.handles = run, [], []
        self.send = tensors  # alive until the exchange is waited on
        for t, kind in zip(tensors, kinds, strict=True):
            out = torch.empty(t.shape, dtype=t.dtype, device=t.device)
            self.handles.append(run.comm.all_to_all_start(out, t, group, kind))
            self.recv.append(out)

    def wait(self) -> list[torch.Tensor]:
        with self.run.timer.region("comm"):  # the compute stream's stall on NCCL
            for h in self.handles:
                h.wait()
        return self.recv


def _pipelined(
    n: int,
    send: Callable[[int], _Exchange],
    compute: Callable[[int, list[torch.Tensor]], list[torch.Tensor]],
    back: Callable[[int, list[torch.Tensor]], _Exchange],
    land: Callable[[int, list[torch.Tensor]], None],
) -> None:
    """Chunk c+1's exchange in flight during chunk c's compute; chunk c's results travel back
    while chunk c+1 computes and are landed one iteration later."""
    inbound = send(0)
    outbound: tuple[int, _Exchange] | None = None
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
        g, u, n = run.groups.get("uly"), pipe.u, pipe.chunks
        out = torch.empty_like(q)
        saved: list[torch.Tensor] = []

        def send(c):
            with run.timer.region("layout"):
                bufs = [send_buffer(t, u, n, c) for t in (q, k, v)]
            return _Exchange(bufs, ("a2a_q", "a2a_k", "a2a_v"), run, g)

        def compute(c, recv):
            heads = [as_heads(t) for t in recv]
            qc, kc, vc = pipe.to_global(heads, run)
            with run.timer:
                oc, lse = pipe.attn.fwd(qc, kc, vc)
            saved.extend((qc, kc, vc, oc, lse))
            return pipe.to_buffer([oc], run, heads[0].shape[1])

        def back(c, results):
            with run.timer.region("layout"):
                bufs = [return_buffer(results[0], u)]
            return _Exchange(bufs, ("a2a_out",), run, g)

        def land(c, recv):
            with run.timer.region("layout"):
                put_chunk(out, recv[0], n, c)

        _pipelined(n, send, compute, back, land)
        ctx.save_for_backward(*saved)
        ctx.pipe, ctx.run, ctx.kshape = pipe, run, k.shape
        return out

    @staticmethod
    def backward(ctx, dout):
        pipe, run = ctx.pipe, ctx.run
        g, u, n = run.groups.get("uly"), pipe.u, pipe.chunks
        saved = ctx.saved_tensors
        dout = dout.contiguous()
        dq = torch.empty(dout.shape, dtype=dout.dtype, device=dout.device)
        dk = torch.empty(ctx.kshape, dtype=dout.dtype, device=dout.device)
        dv = torch.empty_like(dk)

        def send(c):
            with run.timer.region("layout"):
                bufs = [send_buffer(dout, u, n, c)]
            return _Exchange(bufs, ("a2a_out_bwd",), run, g)

        def compute(c, recv):
            buf = as_heads(recv[0])
            (doc,) = pipe.to_global([buf], run)
            qc, kc, vc, oc, lse = saved[5 * c : 5 * c + 5]
            with run.timer:
                grads = pipe.attn.bwd(doc, qc, kc, vc, oc, lse)
            with run.timer.region("layout"):
                grads = [t.to(dout.dtype) for t in grads]
            return pipe.to_buffer(grads, run, buf.shape[1])

        def back(c, results):
            with run.timer.region("layout"):
                bufs = [return_buffer(t, u) for t in results]
            return _Exchange(bufs, ("a2a_q_bwd", "a2a_k_bwd", "a2a_v_bwd"), run, g)

        def land(c, recv):
            with run.timer.region("layout"):
                for dst, r in zip((dq, dk, dv), recv, strict=True):
                    put_chunk(dst, r, n, c)

        _pipelined(n, send, compute, back, land)
        return dq, dk, dv, None, None


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
