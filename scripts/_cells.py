"""One lcab cell's timed step outside the sweep, for the check scripts: lcab's own cell pipeline
(compose -> plan -> lcab.pipeline.prepare: mask, kernel checks, the identity plan -> inputs ->
training step), nothing re-implemented."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcab import kernels
from lcab.compose import compose_config
from lcab.harness.inputs import StepInputs
from lcab.harness.step import training_step
from lcab.masks.slices import AttnMask
from lcab.pipeline.measure import cell_inputs
from lcab.pipeline.prepare import prepare
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
        f"bench.mode={mode}",
    ]
    cell = plan_cell(compose_config(over))
    c = cell.config
    device = torch.device(device)
    p = prepare(cell, device, 0, 1, kernels.create(kernel, {**c["kernel"], **options}))
    _, inputs = cell_inputs(p, 0)
    fn = p.strategy.step_fn(p.plan, None)  # the identity plan: the kernel's prepared function
    return CellStep(training_step(fn, inputs, mode), inputs, p.mask, c, dict(p.plan.notes))
