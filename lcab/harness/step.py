"""The training step: one attention call in fwd, bwd (backward alone) or fwd_bwd mode."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lcab.harness.inputs import StepInputs
from lcab.kernels.base import AttnFn


def run_forward(fn: AttnFn, inputs: StepInputs) -> torch.Tensor:
    out, _ = fn(*inputs.qkv)
    return out


def grads(out: torch.Tensor, inputs: StepInputs, retain: bool) -> tuple[torch.Tensor, ...]:
    # autograd.grad returns fresh tensors: no accumulation kernel into .grad inside the timing.
    return torch.autograd.grad(out, inputs.qkv, inputs.dout, retain_graph=retain)


def training_step(fn: AttnFn, inputs: StepInputs, mode: str) -> Callable[[], object]:
    """A zero-argument callable that does the timed work of `mode`."""
    if mode == "fwd":
        return lambda: run_forward(fn, inputs)
    if mode == "fwd_bwd":
        return lambda: grads(run_forward(fn, inputs), inputs, retain=False)
    if mode == "bwd":
        out = run_forward(fn, inputs)  # one forward outside the timing, graph retained
        return lambda: grads(out, inputs, retain=True)
    raise ValueError(f"unknown mode {mode}")
