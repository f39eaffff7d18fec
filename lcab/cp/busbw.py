"""Achieved bandwidth of each kind of collective a CP cell used, measured in isolation.

After a cell's timed and instrumented passes, every kind recorded by Comm is replayed alone on
the same group at its mean per-call size: a few warmup and timed calls, a barrier before each,
each call's time the max over ranks, the median over calls reported. Numbers are in
nccl-tests' terms (algbw = size / time, busbw = algbw x bus_factor), so they compare with an
nccl-tests run on the same machine and with the links' peak.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist

from lcab.cp.comm import CommStats, KindInfo, Op, all_gather_tensor, p2p_batch, reduce_scatter_tensor

# Enough to see a steady per-call time, few enough that the CPU test suite does not notice.
WARMUP, ITERS = 2, 5


def bus_factor(op: Op, n: int) -> float:
    """busbw / algbw for `op` over a group of n ranks, as nccl-tests report it
    (nccl-tests doc/PERFORMANCE.md; all_to_all and send/recv as in its alltoall.cu and
    sendrecv.cu): the fraction of the buffer each rank must move over its own link, so that
    busbw is comparable with the link's peak whatever the collective and n.

    all_reduce 2(n-1)/n; all_gather, reduce_scatter, all_to_all (n-1)/n; a p2p hop 1.
    """
    if op is Op.P2P:
        return 1.0
    if op is Op.ALL_REDUCE:
        return 2.0 * (n - 1) / n
    if op in (Op.ALL_GATHER, Op.REDUCE_SCATTER, Op.ALL_TO_ALL, Op.PAIRWISE):
        return (n - 1) / n
    raise ValueError(f"no bus factor for {op!r}")


@dataclass(frozen=True)
class Spec:
    """One kind as every rank replays it (agreed over ranks, so buffers match)."""

    kind: str
    op: Op
    group_size: int
    size_bytes: float  # mean nccl-tests size of one call
    itemsize: int

    def numel(self) -> int:
        """Elements of the nccl-tests-sized buffer, rounded up so the group divides it."""
        n = math.ceil(self.size_bytes / self.itemsize)
        if self.op in (Op.ALL_GATHER, Op.REDUCE_SCATTER, Op.ALL_TO_ALL, Op.PAIRWISE):
            n = math.ceil(n / self.group_size) * self.group_size
        return max(n, self.group_size)


@dataclass
class KindBw:
    bytes: int
    ms: float
    algbw_gbps: float
    busbw_gbps: float
    ops: str
    group: int


def bandwidth(spec: Spec, ms: float) -> KindBw:
    size = spec.numel() * spec.itemsize
    algbw = size / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")  # 0 ms: a broken clock, not infinity
    busbw = algbw * bus_factor(spec.op, spec.group_size)
    return KindBw(size, ms, algbw, busbw, str(spec.op), spec.group_size)


def _agree(stats: CommStats) -> list[Spec]:
    """Union of the kinds over ranks, sized by the largest per-call mean (equal in practice)."""
    mine = {
        k: (str(i.op), i.group_size, i.size_bytes / stats.calls[k], i.dtype.itemsize)
        for k, i in stats.kinds.items()
    }
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    merged: dict[str, tuple] = {}
    for m in every:
        for k, (op, n, size, item) in m.items():
            prev = merged.get(k)
            merged[k] = (op, n, max(size, prev[2]) if prev else size, item)
    return [Spec(k, Op(op), n, size, item) for k, (op, n, size, item) in sorted(merged.items())]


def _call(spec: Spec, info: KindInfo, device: torch.device) -> Callable[[], None]:
    """One blocking call of the kind on this rank's group, with fresh buffers."""
    n, g, group = spec.numel(), spec.group_size, info.group

    def buf(numel: int) -> torch.Tensor:
        return torch.zeros(numel, dtype=info.dtype, device=device)

    if spec.op in (Op.P2P, Op.PAIRWISE):
        if spec.op is Op.P2P:  # one ring hop: peers = (to, from)
            to, frm = info.peers
            sends, recvs = [(buf(n), to)], [(buf(n), frm)]
        else:  # a slice to and from every other member of the group, one batch
            others = [p for p in info.peers if p != dist.get_rank()]
            sends, recvs = [(buf(n // g), p) for p in others], [(buf(n // g), p) for p in others]

        def p2p() -> None:
            for w in p2p_batch(sends, recvs, group):
                w.wait()

        return p2p
    if spec.op is Op.ALL_GATHER:
        out, inp = buf(n), buf(n // g)
        return lambda: all_gather_tensor(out, inp, group=group)
    if spec.op is Op.REDUCE_SCATTER:
        out, inp = buf(n // g), buf(n)
        return lambda: reduce_scatter_tensor(out, inp, group=group)
    if spec.op is Op.ALL_TO_ALL:
        out, inp = buf(n), buf(n)
        return lambda: dist.all_to_all_single(out, inp, group=group)
    x = buf(n)
    return lambda: dist.all_reduce(x, group=group)


def _time_ms(fn: Callable[[], None] | None, device: torch.device) -> float:
    """One call after a barrier; a rank outside the kind's groups only takes the barrier."""
    dist.barrier()
    if fn is None:
        return 0.0
    if device.type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def probe(stats: CommStats, device: torch.device) -> dict | None:
    """Collective over all ranks; rank 0 gets {kind: KindBw as a dict}, the others None.
    Kinds counted outside Comm (a peer's own calls) have no KindInfo and are not probed."""
    specs = _agree(stats)
    times = torch.zeros((len(specs), ITERS), dtype=torch.float64)
    for i, spec in enumerate(specs):
        info = stats.kinds.get(spec.kind)
        fn = _call(spec, info, device) if info is not None else None
        for _ in range(WARMUP):
            _time_ms(fn, device)
        for j in range(ITERS):
            times[i, j] = _time_ms(fn, device)
        del fn  # frees this kind's buffers before the next kind's
    times = times.to(device)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)  # a call lasts until its slowest rank is done
    if dist.get_rank() != 0:
        return None
    per_call = np.median(times.cpu().numpy(), axis=1) if specs else []
    return {s.kind: asdict(bandwidth(s, float(ms))) for s, ms in zip(specs, per_call, strict=True)}
