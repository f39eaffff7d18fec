"""FLOPs, TFLOPs/s per device, peak and MFU of a measured cell, the same for every path."""

from __future__ import annotations

import torch

from lcab.harness.flops import attention_flops, tflops_per_s
from lcab.harness.peaks import peak_tflops


def throughput_metrics(
    area: int,
    heads_q: int,
    head_dim: int,
    batch: int,
    mode: str,
    p50_ms: float,
    world: int,
    dtype: str,
    device: torch.device,
) -> dict:
    """p50_ms is the cell's time (the max over ranks for CP); TFLOPs/s is per device."""
    flops = attention_flops(area, heads_q, head_dim, batch, mode)
    tflops = tflops_per_s(flops, p50_ms / 1e3, world)
    peak = peak_tflops(torch.cuda.get_device_name(device), dtype) if device.type == "cuda" else None
    return {"flops": flops, "tflops": tflops, "peak_tflops": peak, "mfu": tflops / peak if peak else None}
