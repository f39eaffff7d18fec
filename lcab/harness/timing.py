"""Timing protocol (ANCHORS.md section 1): first call, warmup, then timed calls.

On CUDA each timed call is preceded by an L2 flush (writing a buffer larger than L2) and an
optional barrier, and bracketed by CUDA events, so a call is never timed with a warm cache
or with a peer rank still busy. On CPU the wall clock brackets a synchronous call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Timing:
    times_ms: tuple[float, ...]

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

    def summary(self) -> dict[str, float]:
        t = np.asarray(self.times_ms)
        return {
            "time_ms_p20": self.p20,
            "time_ms_p50": self.p50,
            "time_ms_p80": self.p80,
            "time_ms_mean": float(t.mean()),
            "time_ms_min": float(t.min()),
            "time_ms_max": float(t.max()),
            # Spread of the middle 60% relative to the median: a noise indicator.
            "time_spread": (self.p80 - self.p20) / self.p50 if self.p50 > 0 else 0.0,
        }


class L2Flush:
    """Writes a buffer of `mb` MiB before each timed call to evict L2 (256 MiB > any Hopper L2)."""

    def __init__(self, device: torch.device, mb: int) -> None:
        self.buf = torch.empty(mb * 1024 * 1024, dtype=torch.int8, device=device)

    def __call__(self) -> None:
        self.buf.fill_(1)


def measure(
    call: Callable[[], object],
    device: torch.device,
    warmup: int,
    iters: int,
    l2_flush_mb: int = 0,
    barrier: Callable[[], None] | None = None,
) -> Timing:
    return measure_interleaved([call], device, warmup, iters, l2_flush_mb, barrier)[0]


def measure_interleaved(
    calls: list[Callable[[], object]],
    device: torch.device,
    warmup: int,
    iters: int,
    l2_flush_mb: int = 0,
    barrier: Callable[[], None] | None = None,
) -> list[Timing]:
    """Times several calls round-robin (iteration i of every call before iteration i + 1), so a
    slow drift of the device (clocks, temperature) spreads over all of them instead of
    penalising whichever is timed last. One call is the plain protocol."""
    for call in calls:
        call()  # first call: compilation, autotuning, handle creation
    for _ in range(warmup):
        for call in calls:
            call()
    if device.type == "cuda":
        return _measure_cuda(calls, device, iters, l2_flush_mb, barrier)
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(iters):
        for j, call in enumerate(calls):
            if barrier is not None:
                barrier()
            t0 = time.perf_counter()
            call()
            times[j].append((time.perf_counter() - t0) * 1e3)
    return [Timing(tuple(t)) for t in times]


def _measure_cuda(calls, device, iters, l2_flush_mb, barrier) -> list[Timing]:
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
    return [Timing(tuple(a.elapsed_time(b) for a, b in ev)) for ev in events]
