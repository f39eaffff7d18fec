"""Mask-aware attention FLOPs (ANCHORS.md section 1)."""

from __future__ import annotations

# Backward does 2.5x the forward's matmul work (dS, dQ, dK, dV plus the recomputed S).
MODE_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}


def attention_flops(area: int, heads_q: int, head_dim: int, batch: int, mode: str) -> float:
    """4 * area * Hq * d * B for the forward (QK^T and PV, 2 FLOPs per MAC), scaled by mode."""
    return 4.0 * area * heads_q * head_dim * batch * MODE_FACTOR[mode]


def tflops_per_s(flops: float, seconds: float, world: int = 1) -> float:
    """Per-device throughput: the distributed time is the max over ranks, divided over the world."""
    return flops / (seconds * world) / 1e12
