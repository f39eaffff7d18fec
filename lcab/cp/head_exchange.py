"""How a Ulysses group moves one head chunk between sequence sharding ([B, L, H, D]: my tokens,
all heads) and head sharding ([B, U*L, h, D]: the group's tokens, my heads), two ways
(cp.exchange):

  all_to_all  DeepSpeed's: each tensor packed into one contiguous send buffer [U, B, L, h, D]
              (a copy of all of it), one NCCL all_to_all_single, which also moves my own slice.
  pairwise    p2p: each other member's slice is made contiguous and sent, my own slice is copied
              straight into place, received slices land where the kernel reads them (no copy
              after the exchange at batch 1). Issue 16, S = 32K on two H200s: the 256 MiB q
              buffer (128 MiB each way) took 0.65 ms either way, busbw ~205 GB/s
              (docs/results/h200x2/exploration/exchange.jsonl).

Both are asynchronous: start() returns a Pending whose wait() makes the compute stream wait
(timed as the region "comm"; copies as "layout") and returns the tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcab.config import ConfigError
from lcab.cp.base import RunCtx


def check_exchange(name: str) -> str:
    if name not in EXCHANGE:
        raise ConfigError(f"cp.exchange must be one of {', '.join(EXCHANGE)}, not {name!r}")
    return name


@dataclass(frozen=True)
class Members:
    """A Ulysses group: its members' global ranks in group order, and my index among them."""

    ranks: tuple[int, ...]
    me: int

    @property
    def u(self) -> int:
        return len(self.ranks)


class Pending:
    """Exchanges in flight; wait() stalls the compute stream on them, then finishes the layout."""

    def __init__(self, run: RunCtx, handles, finish: Callable[[], list], keep=()) -> None:
        self.run, self.handles, self.finish, self.keep = run, handles, finish, keep  # keep: send buffers

    def wait(self) -> list:
        with self.run.timer.region("comm"):
            for h in self.handles:
                h.wait()
        with self.run.timer.region("layout"):
            return self.finish()


def _chunk_view(x: torch.Tensor, u: int, n: int) -> torch.Tensor:
    """[B, L, H, D] as [B, L, U, n, h, D]: member j's heads of chunk c are [:, :, j, c]."""
    b, seq, h, d = x.shape
    return x.reshape(b, seq, u, n, h // (u * n), d)


def land(dst: torch.Tensor, parts: list[torch.Tensor], n: int, c: int) -> None:
    """Write member j's [B, L, h, D] (my tokens, j's heads of chunk c) into dst [B, L, H, D]."""
    view = _chunk_view(dst, len(parts), n)
    for j, p in enumerate(parts):
        view[:, :, j, c].copy_(p)


class AllToAll:
    name = "all_to_all"

    def to_heads(self, xs, kinds, m: Members, n: int, c: int, run: RunCtx, group) -> Pending:
        """xs [B, L, H, D] -> (when waited) [B, U*L, h, D] each."""
        with run.timer.region("layout"):
            bufs = [_chunk_view(x, m.u, n)[:, :, :, c].permute(2, 0, 1, 3, 4).contiguous() for x in xs]
        recv = [torch.empty_like(b) for b in bufs]
        handles = [
            run.comm.all_to_all_start(r, b, group, k) for r, b, k in zip(recv, bufs, kinds, strict=True)
        ]

        def finish():  # [U(src), B, L, h, D] -> [B, U*L, h, D]: a view at batch 1
            return [r.permute(1, 0, 2, 3, 4).reshape(r.shape[1], -1, *r.shape[3:]) for r in recv]

        return Pending(run, handles, finish, bufs)

    def to_seq(self, ys, kinds, m: Members, run: RunCtx, group) -> Pending:
        """ys [B, U*L, h, D] -> (when waited) per tensor, member j's [B, L, h, D] for each j."""
        with run.timer.region("layout"):  # no copy at batch 1
            bufs = [y.reshape(y.shape[0], m.u, -1, *y.shape[2:]).transpose(0, 1).contiguous() for y in ys]
        recv = [torch.empty_like(b) for b in bufs]
        handles = [
            run.comm.all_to_all_start(r, b, group, k) for r, b, k in zip(recv, bufs, kinds, strict=True)
        ]
        return Pending(run, handles, lambda: [list(r.unbind(0)) for r in recv], bufs)


class Pairwise:
    name = "pairwise"

    def to_heads(self, xs, kinds, m: Members, n: int, c: int, run: RunCtx, group) -> Pending:
        outs, handles, keep, fix = [], [], [], []
        for x, kind in zip(xs, kinds, strict=True):
            b, seq, _, d = x.shape
            with run.timer.region("layout"):
                v = _chunk_view(x, m.u, n)[:, :, :, c]  # [B, L, U, h, D]
                out = torch.empty(b, m.u * seq, v.shape[3], d, dtype=x.dtype, device=x.device)
                out[:, m.me * seq : (m.me + 1) * seq] = v[:, :, m.me]
                sends, recvs = [], []
                for j, peer in enumerate(m.ranks):
                    if j == m.me:
                        continue
                    sends.append((v[:, :, j].contiguous(), peer))
                    slot = out[:, j * seq : (j + 1) * seq]
                    r = (
                        slot
                        if slot.is_contiguous()
                        else torch.empty(slot.shape, dtype=x.dtype, device=x.device)
                    )
                    recvs.append((r, peer))
                    fix += [(slot, r)] if r is not slot else []
            handles.append(
                run.comm.pairwise_start(sends, recvs, group, kind, m.ranks, x.numel() // n * x.element_size())
            )
            outs.append(out)
            keep.append(sends)

        def finish():
            for slot, r in fix:  # batch > 1: slots are strided
                slot.copy_(r)
            return outs

        return Pending(run, handles, finish, keep)

    def to_seq(self, ys, kinds, m: Members, run: RunCtx, group) -> Pending:
        parts_all, handles, keep = [], [], []
        for y, kind in zip(ys, kinds, strict=True):
            seq = y.shape[1] // m.u
            parts, sends, recvs = [], [], []
            for j, peer in enumerate(m.ranks):
                mine = y[:, j * seq : (j + 1) * seq]
                if j == m.me:
                    parts.append(mine)  # stays here: landed by a copy, never sent
                    continue
                with run.timer.region("layout"):
                    sends.append((mine.contiguous(), peer))  # no copy at batch 1
                r = torch.empty(mine.shape, dtype=y.dtype, device=y.device)
                recvs.append((r, peer))
                parts.append(r)
            handles.append(
                run.comm.pairwise_start(sends, recvs, group, kind, m.ranks, y.numel() * y.element_size())
            )
            parts_all.append(parts)
            keep.append(sends)
        return Pending(run, handles, lambda: parts_all, keep)


EXCHANGE = {e.name: e for e in (AllToAll(), Pairwise())}
