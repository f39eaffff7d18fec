"""Tokens between the global inputs and a rank: its share cut from them (as fresh leaves), and
every rank's outputs gathered back to global order (the verification's view of a CP step)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from lcab.cp.comm import all_gather_tensor
from lcab.cp.sharding import Shard
from lcab.harness.inputs import StepInputs


def local_inputs(inputs: StepInputs, shard: Shard, rank: int) -> StepInputs:
    """This rank's tokens (trailing padding = zeros) as fresh leaves."""
    idx = torch.from_numpy(shard.index(rank)).to(inputs.q.device)
    pad = idx < 0
    take = torch.where(pad, 0, idx)

    def cut(t: torch.Tensor, grad: bool) -> torch.Tensor:
        x = t.detach().index_select(1, take).masked_fill(pad[None, :, None, None], 0)
        return x.requires_grad_(grad)

    return StepInputs(cut(inputs.q, True), cut(inputs.k, True), cut(inputs.v, True), cut(inputs.dout, False))


def gather_global(local: dict[str, torch.Tensor], shard: Shard, seqlen: int, group=None) -> dict | None:
    """Every rank's local tensors -> global order on rank 0 (None elsewhere)."""
    out = {}
    w = shard.world
    for name, t in local.items():
        t = t.contiguous()
        buf = torch.empty((w * t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
        all_gather_tensor(buf, t, group=group)
        if dist.get_rank() == 0:
            parts = buf.view(w, *t.shape)
            g = torch.zeros((t.shape[0], seqlen, *t.shape[2:]), dtype=t.dtype, device=t.device)
            for r in range(w):
                idx = torch.from_numpy(shard.index(r)).to(t.device)
                keep = idx >= 0
                g[:, idx[keep]] = parts[r][:, keep]
            out[name] = g
    return out if dist.get_rank() == 0 else None
