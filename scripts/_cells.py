"""One lcab cell's timed step outside the sweep, for the check scripts: lcab's own path
(compose -> plan -> mask -> kernel.prepare -> inputs -> training step), nothing re-implemented."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcab.compose import compose_config
from lcab.config import MaskConfig
from lcab.execute import shape_spec
from lcab.harness.inputs import StepInputs, inputs_for
from lcab.harness.step import training_step
from lcab.kernels import base as kernels
from lcab.masks import build as build_mask
from lcab.masks.slices import AttnMask
from lcab.plan import plan_cell


@dataclass
class CellStep:
    step: Callable[[], object]
    inputs: StepInputs
    mask: AttnMask
    config: dict
    notes: dict


def cell_step(
    kernel: str,
    mask: str,
    seqlen: str,
    mode: str,
    shape: str = "paper",
    device: str = "cuda",
    **options: object,
) -> CellStep:
    """The step of `kernel` on `shape`; options go to the kernel on top of its config."""
    over = [
        f"kernel={kernel}",
        f"mask={mask}",
        f"seqlen={seqlen}",
        f"shape={shape}",
        f"bench.device={device}",
    ]
    cell = plan_cell(compose_config(over))
    c = cell.config
    device = torch.device(device)
    k = kernels.get(kernel).configure(**{**{n: v for n, v in c["kernel"].items() if n != "name"}, **options})
    spec = shape_spec(cell, device)
    m = build_mask(MaskConfig(**c["mask"]), c["seqlen"])
    fn = k.prepare(m, spec)
    inputs = inputs_for(spec, m, 0)
    return CellStep(training_step(fn, inputs, mode), inputs, m, c, dict(getattr(fn, "notes", {})))
