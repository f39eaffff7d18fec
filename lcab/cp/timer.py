"""The compute time of a CP step: the sum of its kernel calls (CUDA events on GPU, wall clock on
CPU), and named regions beside it (layout copies, collectives) so a row can say what the time
outside the kernels went to."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch


class _Span:
    """Summed time of one kind of region."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_s = 0.0
        self.events: list = []
        self._t0 = 0.0

    def start(self) -> None:
        if self.device.type == "cuda":
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.events.append([e, None])
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.device.type == "cuda":
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.events[-1][1] = e
        else:
            self.cpu_s += time.perf_counter() - self._t0

    def total_ms(self) -> float:
        if self.device.type == "cuda" and self.events:
            torch.cuda.synchronize(self.device)
            return sum(a.elapsed_time(b) for a, b in self.events)
        return self.cpu_s * 1e3


class ComputeTimer:
    """Sums the time of the kernel calls of a step (`with timer:`) and, apart from it, of named
    regions (`with timer.region("layout"):`); regions must not nest inside the compute."""

    def __init__(self, device: torch.device, enabled: bool = False) -> None:
        self.device, self.enabled = device, enabled
        self._compute = _Span(device)
        self._regions: dict[str, _Span] = {}

    def __enter__(self):
        if self.enabled:
            self._compute.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._compute.stop()

    @contextlib.contextmanager
    def region(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        span = self._regions.setdefault(name, _Span(self.device))
        span.start()
        try:
            yield
        finally:
            span.stop()

    def total_ms(self) -> float:
        return self._compute.total_ms()

    def region_ms(self) -> dict[str, float]:
        """Summed time per region name (e.g. "layout", "comm") since the last reset."""
        return {k: s.total_ms() for k, s in sorted(self._regions.items())}

    def reset(self) -> None:
        self._compute, self._regions = _Span(self.device), {}
