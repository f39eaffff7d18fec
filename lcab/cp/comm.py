"""torch.distributed calls with per-rank accounting: bytes sent and collectives by kind.

Each strategy talks through one Comm, so the record's bytes and counts are those of the code
that ran. `EmulatedComm` counts the same calls without a process group (cp.emulate).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass
class CommStats:
    bytes_sent: int = 0
    calls: Counter = field(default_factory=Counter)  # kind -> count
    wait_s: float = 0.0  # host time blocked in waits (exposed comm on CPU)

    def reset(self) -> None:
        self.bytes_sent = 0
        self.calls = Counter()
        self.wait_s = 0.0


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
        self.stats.bytes_sent += nbytes(send)
        self.stats.calls[kind] += 1
        ops = [dist.P2POp(dist.isend, send, to, group=group), dist.P2POp(dist.irecv, recv, frm, group=group)]
        return Handle(dist.batch_isend_irecv(ops), self.stats)

    def all_gather(self, out: torch.Tensor, inp: torch.Tensor, group, kind: str = "all_gather") -> None:
        w = dist.get_world_size(group)
        self.stats.bytes_sent += nbytes(inp) * (w - 1)
        self.stats.calls[kind] += 1
        t0 = time.perf_counter()
        _all_gather(out, inp, group=group)
        self.stats.wait_s += time.perf_counter() - t0

    def reduce_scatter(
        self, out: torch.Tensor, inp: torch.Tensor, group, kind: str = "reduce_scatter"
    ) -> None:
        w = dist.get_world_size(group)
        self.stats.bytes_sent += nbytes(inp) * (w - 1) // w
        self.stats.calls[kind] += 1
        t0 = time.perf_counter()
        _reduce_scatter(out, inp, group=group)
        self.stats.wait_s += time.perf_counter() - t0

    def all_to_all(self, out: torch.Tensor, inp: torch.Tensor, group, kind: str = "all_to_all") -> None:
        w = dist.get_world_size(group)
        self.stats.bytes_sent += nbytes(inp) * (w - 1) // w
        self.stats.calls[kind] += 1
        t0 = time.perf_counter()
        dist.all_to_all_single(out, inp, group=group)
        self.stats.wait_s += time.perf_counter() - t0
