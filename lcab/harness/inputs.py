"""Random q, k, v, dout for one cell: never zeros, seeded, in lcab's [B, S, H, D] layout."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lcab.kernels.base import ShapeSpec
from lcab.masks.slices import AttnMask


@dataclass
class StepInputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    dout: torch.Tensor

    @property
    def qkv(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.q, self.k, self.v


def make_inputs(
    batch: int,
    seqlen_q: int,
    seqlen_k: int,
    heads_q: int,
    heads_kv: int,
    head_dim: int,
    dtype: torch.dtype,
    device: torch.device,
    seed: int,
) -> StepInputs:
    # Drawn by a generator on the target device: the same seed gives the same values on every
    # device of one type (every rank of a job). On a GPU this takes milliseconds; drawing a 48K
    # cell's 0.8G values on the CPU took seconds per cell, more than most cells' timed calls.
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    gen = torch.Generator(device=gen_device).manual_seed(seed)

    def draw(s: int, h: int) -> torch.Tensor:
        t = torch.randn(batch, s, h, head_dim, generator=gen, dtype=torch.float32, device=gen_device)
        return t.to(device=device, dtype=dtype).requires_grad_(True)

    q, k, v = draw(seqlen_q, heads_q), draw(seqlen_k, heads_kv), draw(seqlen_k, heads_kv)
    dout = draw(seqlen_q, heads_q).detach()
    return StepInputs(q, k, v, dout)


def inputs_for(spec: ShapeSpec, mask: AttnMask, seed: int) -> StepInputs:
    """The cell's inputs: the shape's batch, heads, head dim, dtype and device over the mask's lengths."""
    return make_inputs(
        spec.batch,
        mask.seqlen_q,
        mask.seqlen_k,
        spec.heads_q,
        spec.heads_kv,
        spec.head_dim,
        spec.dtype,
        spec.device,
        seed,
    )
