"""Timing protocol (ANCHORS.md section 1): first call, warmup, then timed calls.

On CUDA each timed call is preceded by an L2 flush (writing a buffer larger than L2) and an
optional barrier, and bracketed by CUDA events, so a call is never timed with a warm cache
or with a peer rank still busy. On CPU the wall clock brackets a synchronous call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass(frozen=True)
class Timing:
    times_ms: tuple[float, ...]
    warmup: int = 0  # warmup calls made after the first call
    # Wall time of the untimed first call, synchronized: JIT compilation (flex, FlashAttention-4's
    # CuTe DSL), autotuning and handle creation show here, never in times_ms.
    first_call_ms: float | None = None

    def quantile(self, q: float) -> float:
        return float(np.quantile(np.asarray(self.times_ms), q))

    @property
    def p20(self) -> float:
        return self.quantile(0.2)

    @property
    def p50(self) -> float:
        return self.quantile(0.5)

    @property
    def p80(self) -> float:
        return self.quantile(0.8)

    @property
    def spread(self) -> float:
        """Spread of the middle 60% relative to the median: a noise indicator."""
        return (self.p80 - self.p20) / self.p50 if self.p50 > 0 else 0.0

    def summary(self) -> dict[str, float]:
        t = np.asarray(self.times_ms)
        return {
            "time_ms_p20": self.p20,
            "time_ms_p50": self.p50,
            "time_ms_p80": self.p80,
            "time_ms_mean": float(t.mean()),
            "time_ms_min": float(t.min()),
            "time_ms_max": float(t.max()),
            "time_spread": self.spread,
            "iters": len(self.times_ms),
            "warmup": self.warmup,
            "first_call_ms": self.first_call_ms,
        }


class L2Flush:
    """Writes a buffer of `mb` MiB before each timed call to evict L2 (256 MiB > any Hopper L2)."""

    def __init__(self, device: torch.device, mb: int) -> None:
        self.buf = torch.empty(mb * 1024 * 1024, dtype=torch.int8, device=device)

    def __call__(self) -> None:
        self.buf.fill_(1)


@dataclass(frozen=True)
class Schedule:
    """How many calls to make. budget_ms = 0: always `warmup` and `iters` (the paper's fixed
    protocol). budget_ms > 0: one probe call sizes the cell so that the timed calls take about
    budget_ms (between min_iters and iters) and warmup about a quarter of that (at least one
    call); if the p20..p80 spread is then above max_spread, more calls are timed, up to iters
    and, when extend_ms > 0, only while all timed calls stay within extend_ms. Large, slow
    cells get few calls, small noisy ones many."""

    warmup: int
    iters: int
    budget_ms: float = 0.0
    min_iters: int = 3
    max_spread: float = 0.02
    extend_ms: float = 0.0

    @classmethod
    def from_bench(cls, b: dict) -> Schedule:
        # A bench dict without the adaptive keys (older rows, hand-made ones) gets the fixed protocol.
        return cls(**{f.name: b[f.name] for f in fields(cls) if f.name in b})

    @property
    def adaptive(self) -> bool:
        return self.budget_ms > 0

    def sized(self, round_ms: float) -> tuple[int, int]:
        """(warmup, iters) for calls of round_ms each."""
        if not self.adaptive:
            return self.warmup, self.iters
        per = max(round_ms, 1e-3)
        warmup = min(self.warmup, max(1, math.ceil(self.budget_ms / 4 / per)))
        iters = min(self.iters, max(self.min_iters, math.ceil(self.budget_ms / per)))
        return warmup, iters


Clock = Callable[[], float]  # seconds; the wall clock by default, a virtual one in tests


def _sync_fn(device: torch.device) -> Callable[[torch.device], None]:
    """What waits for the device's queued work: CUDA's synchronize, nothing on CPU."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda _d: None)


def measure(
    call: Callable[[], object],
    device: torch.device,
    schedule: Schedule,
    l2_flush_mb: int = 0,
    barrier: Callable[[], None] | None = None,
    clock: Clock = time.perf_counter,
) -> Timing:
    return measure_interleaved([call], device, schedule, l2_flush_mb, barrier, clock)[0]


def measure_interleaved(
    calls: list[Callable[[], object]],
    device: torch.device,
    schedule: Schedule,
    l2_flush_mb: int = 0,
    barrier: Callable[[], None] | None = None,
    clock: Clock = time.perf_counter,
) -> list[Timing]:
    """Times several calls round-robin (iteration i of every call before iteration i + 1), so a
    slow drift of the device (clocks, temperature) spreads over all of them instead of
    penalising whichever is timed last. One call is the plain protocol. `clock` times CPU calls
    and the adaptive probe (CUDA calls are timed by events)."""
    sync = _sync_fn(device)
    first = []
    for call in calls:
        t0 = clock()
        call()  # first call: compilation, autotuning, handle creation
        sync(device)
        first.append((clock() - t0) * 1e3)
    warmup, iters = schedule.warmup, schedule.iters
    probes = 0
    if schedule.adaptive:
        warmup, iters = schedule.sized(_probe_ms(calls, device, clock))
        probes = 1  # the probe round is one of the warmup rounds
    for _ in range(warmup - probes):
        for call in calls:
            call()
    timed = _timed_rounds(calls, device, iters, l2_flush_mb, barrier, clock)
    while schedule.adaptive and len(timed[0]) < schedule.iters:
        if max(Timing(tuple(t)).spread for t in timed) <= schedule.max_spread:
            break
        more = min(len(timed[0]), schedule.iters - len(timed[0]), _affordable(timed, schedule.extend_ms))
        if more < 1:
            break  # a slow noisy cell keeps its spread (recorded per row) rather than the GPU time
        extra = _timed_rounds(calls, device, more, l2_flush_mb, barrier, clock)
        timed = [a + b for a, b in zip(timed, extra, strict=True)]
    return [Timing(tuple(t), warmup=warmup, first_call_ms=f) for t, f in zip(timed, first, strict=True)]


def _affordable(timed: list[list[float]], extend_ms: float) -> int:
    """How many more rounds fit in extend_ms of timed calls in all (0: no cap)."""
    if extend_ms <= 0:
        return 1 << 30
    spent = sum(sum(t) for t in timed)
    per_round = spent / len(timed[0])
    return int((extend_ms - spent) // per_round) if per_round > 0 else 1 << 30


def _probe_ms(calls: list[Callable[[], object]], device: torch.device, clock: Clock) -> float:
    """Wall time of one round of calls, synchronized: sizes an adaptive schedule."""
    sync = _sync_fn(device)
    sync(device)
    t0 = clock()
    for call in calls:
        call()
    sync(device)
    return (clock() - t0) * 1e3


def _timed_rounds(calls, device, iters, l2_flush_mb, barrier, clock) -> list[list[float]]:
    if device.type == "cuda":
        return _measure_cuda(calls, device, iters, l2_flush_mb, barrier)
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(iters):
        for j, call in enumerate(calls):
            if barrier is not None:
                barrier()
            t0 = clock()
            call()
            times[j].append((clock() - t0) * 1e3)
    return times


def _measure_cuda(calls, device, iters, l2_flush_mb, barrier) -> list[list[float]]:
    flush = L2Flush(device, l2_flush_mb) if l2_flush_mb > 0 else None
    events = [
        [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for _ in calls
    ]
    torch.cuda.synchronize(device)
    for i in range(iters):
        for j, call in enumerate(calls):
            if flush is not None:
                flush()
            if barrier is not None:
                barrier()
            events[j][i][0].record()
            call()
            events[j][i][1].record()
    torch.cuda.synchronize(device)
    return [[a.elapsed_time(b) for a, b in ev] for ev in events]
