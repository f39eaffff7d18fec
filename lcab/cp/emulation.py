"""What a strategy needs to run one of its ranks on one device (cp.emulate): that rank's buffers
cut from the global inputs, its tiled compute as one callable, and the byte count of the
all-to-all + ring family. The driver is lcab.cp.emulate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcab.cp.merge import LseAccumulator, RowSum, acc_dtype
from lcab.cp.tiled_lse import TiledPlan, backward_step, forward_tiles
from lcab.harness.inputs import StepInputs
from lcab.kernels.base import ShapeSpec


@dataclass
class RankBuffers:
    """One rank's q and dout buffers (heads already split) and the K/V block of each source."""

    q: torch.Tensor
    dout: torch.Tensor
    kv_of: Callable[[int | None], torch.Tensor]  # step source -> [2, B, L, H, D]


def take_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Tokens idx (global positions, -1 = padding -> zeros) of a [B, S, H, D] tensor."""
    pad = idx < 0
    return t.index_select(1, torch.where(pad, 0, idx)).masked_fill(pad[None, :, None, None], 0)


def rank_heads(plan: TiledPlan, glob: StepInputs):
    """q, k, v, dout of the global inputs restricted to this rank's Ulysses heads (K/V heads
    replicated first where the degree exceeds them)."""
    deg, u = plan.topo.deg, plan.topo.uly_index
    q, k, v, dout = (t.detach() for t in (glob.q, glob.k, glob.v, glob.dout))
    if deg.kv_replicas > 1:
        k, v = k.repeat_interleave(deg.kv_replicas, 2), v.repeat_interleave(deg.kv_replicas, 2)
    hq, hk = plan.heads_q, plan.heads_kv
    qs, ks = slice(u * hq, (u + 1) * hq), slice(u * hk, (u + 1) * hk)
    return q[:, :, qs], k[:, :, ks], v[:, :, ks], dout[:, :, qs]


def tiled_step(plan: TiledPlan, bufs: RankBuffers, mode: str) -> Callable[[], object]:
    """The plan's kernel calls and merges on local copies, as one call of `mode`."""
    steps = [(bufs.kv_of(s.source), s.tiles) for s in plan.steps]
    qb, doutb = bufs.q, bufs.dout
    adt = acc_dtype(qb.dtype)

    def fwd():
        acc = LseAccumulator(qb)
        for (kv, tiles), flags in zip(steps, plan.last, strict=True):
            forward_tiles(qb, kv, tiles, acc, flags)
        return acc.result(qb.dtype)

    out, lse = fwd()

    def bwd():
        dq = RowSum(qb.shape, qb.dtype, qb.device)
        for kv, tiles in steps:
            backward_step(doutb, qb, kv, out, lse, tiles, dq)
        return dq.result(adt)

    if mode == "fwd":
        return fwd
    if mode == "bwd":
        return bwd
    return lambda: (fwd(), bwd())


def kv_block_bytes(plan: TiledPlan, shape: ShapeSpec) -> tuple[float, float]:
    """(K/V bytes of one rank's local block, q bytes of it); after a Ulysses all-to-all a
    rank's K/V buffer (U*L tokens x Hkv/U heads) has the bytes of its local K/V."""
    el, n = shape.dtype.itemsize, plan.shard.local_len
    kv = 2 * shape.batch * n * shape.heads_kv * plan.topo.deg.kv_replicas * shape.head_dim * el
    return kv, shape.batch * n * shape.heads_q * shape.head_dim * el


def mesh_bytes(plan: TiledPlan, shape: ShapeSpec, mode: str) -> float:
    """All-to-all of q, k, v and out around a ring of K/V hops with dK/dV in fp32 (ring, usp,
    double_ring, and ulysses as the ring of one)."""
    deg = plan.topo.deg
    u, r = deg.ulysses, deg.ring
    kv, q = kv_block_bytes(plan, shape)
    el, acc = shape.dtype.itemsize, acc_dtype(shape.dtype).itemsize
    a2a = (u - 1) / u * (2 * q + kv)  # q and out, plus k and v
    fwd, bwd = a2a + (r - 1) * kv, a2a + (r - 1) * kv + r * kv * acc / el
    return {"fwd": fwd, "bwd": bwd, "fwd_bwd": fwd + bwd}[mode]
