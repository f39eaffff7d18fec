"""FLOPs, TFLOPs/s per device, peak and MFU of a measured cell, the same for every path."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lcab.harness.flops import attention_flops, tflops_per_s
from lcab.harness.peaks import peak_tflops


@dataclass(frozen=True)
class Work:
    """What one step of a cell computes: the global mask's visible pairs over the shape."""

    area: int
    heads_q: int
    head_dim: int
    batch: int
    mode: str
    dtype: str  # short name (bf16, fp32, ...): the peak is per dtype

    @property
    def flops(self) -> float:
        return attention_flops(self.area, self.heads_q, self.head_dim, self.batch, self.mode)


def throughput(work: Work, p50_ms: float, world: int, device: torch.device) -> dict:
    """p50_ms is the cell's time (the max over ranks for CP); TFLOPs/s is per device."""
    flops = work.flops
    tflops = tflops_per_s(flops, p50_ms / 1e3, world)
    peak = peak_tflops(torch.cuda.get_device_name(device), work.dtype) if device.type == "cuda" else None
    return {"flops": flops, "tflops": tflops, "peak_tflops": peak, "mfu": tflops / peak if peak else None}
