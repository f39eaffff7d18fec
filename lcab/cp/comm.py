"""torch.distributed calls with per-rank accounting: bytes sent and collectives by kind.

Each strategy talks through one Comm, so the record's bytes and counts are those of the code
that ran. Per kind it also keeps what lcab.cp.busbw needs to replay that collective in
isolation: the operation, its group (and peers for a ring hop), dtype and buffer size.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

import torch
import torch.distributed as dist

all_gather_tensor = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
reduce_scatter_tensor = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class Op(StrEnum):
    P2P = "p2p"  # one ring hop: send to the next rank while receiving from the previous
    ALL_TO_ALL = "all_to_all"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_REDUCE = "all_reduce"
    # An all-to-all as p2p: every rank sends each other member its slice and copies its own
    # locally (lcab.cp.head_exchange.Pairwise); sized and bus-factored like all_to_all.
    PAIRWISE = "pairwise"


@dataclass
class KindInfo:
    """How one kind of call talks. `size_bytes` sums nccl-tests' "size" of each call (p2p: the
    sent buffer; all_to_all: the buffer; all_gather: the output; reduce_scatter: the input),
    the quantity its algbw divides by time."""

    op: Op
    group_size: int
    dtype: torch.dtype
    size_bytes: int = 0
    group: object = field(default=None, repr=False, compare=False)  # not picklable in general
    peers: tuple[int, ...] | None = None  # p2p: (to, from); pairwise: the group's global ranks


@dataclass
class CommStats:
    bytes_sent: int = 0
    calls: Counter = field(default_factory=Counter)  # kind -> count
    bytes_by_kind: Counter = field(default_factory=Counter)  # kind -> bytes this rank sent
    kinds: dict[str, KindInfo] = field(default_factory=dict)  # kinds that went through Comm
    wait_s: float = 0.0  # host time blocked in waits (exposed comm on CPU)

    def reset(self) -> None:
        self.bytes_sent = 0
        self.calls = Counter()
        self.bytes_by_kind = Counter()
        self.kinds = {}
        self.wait_s = 0.0

    def record(
        self, kind: str, op: Op, group, sent: int, buf: torch.Tensor, peers=None, size: int = 0
    ) -> None:
        """One call of `kind` that sent `sent` bytes; `buf` is the tensor nccl-tests sizes it by
        (or `size` bytes of buf's dtype, where no one tensor is that buffer)."""
        self.bytes_sent += sent
        self.calls[kind] += 1
        self.bytes_by_kind[kind] += sent
        info = self.kinds.get(kind)
        if info is None:
            info = KindInfo(op, dist.get_world_size(group), buf.dtype, group=group, peers=peers)
            self.kinds[kind] = info
        info.size_bytes += size or nbytes(buf)


def p2p_batch(sends, recvs, group) -> list:
    """(tensor, global peer) pairs sent and received in one batch_isend_irecv; its works."""
    ops = [dist.P2POp(dist.isend, t, p, group=group) for t, p in sends]
    ops += [dist.P2POp(dist.irecv, t, p, group=group) for t, p in recvs]
    return dist.batch_isend_irecv(ops)


class Handle:
    def __init__(self, works, stats: CommStats) -> None:
        self.works = works
        self.stats = stats

    def wait(self) -> None:
        t0 = time.perf_counter()
        for w in self.works:
            w.wait()
        self.stats.wait_s += time.perf_counter() - t0


class Comm:
    def __init__(self) -> None:
        self.stats = CommStats()

    def exchange(self, send: torch.Tensor, recv: torch.Tensor, to: int, frm: int, group, kind: str) -> Handle:
        """Send `send` to global rank `to` while receiving `recv` from `frm` (one ring hop)."""
        self.stats.record(kind, Op.P2P, group, nbytes(send), send, peers=(to, frm))
        return Handle(p2p_batch([(send, to)], [(recv, frm)], group), self.stats)

    def pairwise_start(self, sends, recvs, group, kind: str, members: tuple[int, ...], size: int) -> Handle:
        """An all-to-all as p2p: (tensor, global peer) pairs to send and to receive into, one
        batch; `size` is the whole buffer an all_to_all would move (nccl-tests' size)."""
        self.stats.record(
            kind, Op.PAIRWISE, group, sum(nbytes(t) for t, _ in sends), sends[0][0], members, size
        )
        return Handle(p2p_batch(sends, recvs, group), self.stats)

    def all_gather(self, out: torch.Tensor, inp: torch.Tensor, group, kind: str = "all_gather") -> None:
        w = dist.get_world_size(group)
        self.stats.record(kind, Op.ALL_GATHER, group, nbytes(inp) * (w - 1), out)
        t0 = time.perf_counter()
        all_gather_tensor(out, inp, group=group)
        self.stats.wait_s += time.perf_counter() - t0

    def reduce_scatter(
        self, out: torch.Tensor, inp: torch.Tensor, group, kind: str = "reduce_scatter"
    ) -> None:
        w = dist.get_world_size(group)
        self.stats.record(kind, Op.REDUCE_SCATTER, group, nbytes(inp) * (w - 1) // w, inp)
        t0 = time.perf_counter()
        reduce_scatter_tensor(out, inp, group=group)
        self.stats.wait_s += time.perf_counter() - t0

    def all_to_all_start(
        self, out: torch.Tensor, inp: torch.Tensor, group, kind: str = "all_to_all"
    ) -> Handle:
        """all_to_all_single in flight; the caller waits on the handle (inp must stay alive until then)."""
        w = dist.get_world_size(group)
        self.stats.record(kind, Op.ALL_TO_ALL, group, nbytes(inp) * (w - 1) // w, inp)
        return Handle([dist.all_to_all_single(out, inp, group=group, async_op=True)], self.stats)
