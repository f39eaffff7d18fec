"""The compute time of a CP step: the sum of its kernel calls (CUDA events on GPU, wall clock on CPU)."""

from __future__ import annotations

import time

import torch


class ComputeTimer:
    """Sums the time of the kernel calls of a step (CUDA events on GPU, wall clock on CPU)."""

    def __init__(self, device: torch.device, enabled: bool = False) -> None:
        self.device, self.enabled = device, enabled
        self.cpu_s = 0.0
        self.events: list = []
        self._t0 = 0.0

    def __enter__(self):
        if self.enabled:
            if self.device.type == "cuda":
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                self.events.append([e, None])
            else:
                self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
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

    def reset(self) -> None:
        self.cpu_s, self.events = 0.0, []
