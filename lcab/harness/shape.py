"""A resolved cell config's shape as the kernels' ShapeSpec on a device."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lcab.kernels.base import DTYPE_NAMES, ShapeSpec


def shape_spec(config: Mapping, device: torch.device) -> ShapeSpec:
    s = config["shape"]
    return ShapeSpec(
        batch=s["batch"],
        heads_q=s["heads_q"],
        heads_kv=s["heads_kv"],
        head_dim=s["head_dim"],
        dtype=DTYPE_NAMES[s["dtype"]],
        device=device,
    )
