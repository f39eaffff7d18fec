"""PyTorch's own context parallelism as a peer: torch.distributed.tensor.experimental.
context_parallel, which patches F.scaled_dot_product_attention so the SDPA call on local shards
becomes torch's ring (_templated_ring_attention) over a 1-D DeviceMesh.

lcab's harness already holds each rank's shard, so the context is entered with one dummy
buffer of the global length: context_parallel picks its load balancer from that length (head-tail
when is_causal, the cp.shard=zigzag layout) and patches SDPA; the q/k/v given to SDPA are the
local shards. The whole forward and the whole backward each run inside the context (the
backward re-enters it), since the ring backward is dispatched through the same handlers.
K/V rotate with set_rotate_method("alltoall") (a true ring; torch's default is "allgather").

Only CUDA: the handlers cover the flash / efficient / cudnn SDPA ops. On CPU, SDPA lowers to
aten._scaled_dot_product_flash_attention_for_cpu, which has no DTensor sharding rule, so torch
raises NotImplementedError (checked by tests/test_cp_peers.py via `probe`). Communication goes
through torch's functional collectives, so lcab counts neither bytes nor compute time here.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lcab.config import RingCPConfig
from lcab.cp.base import Degrees, RankPlan, RingOnly, RunCtx, Strategy, Topology, full_or_causal_only
from lcab.cp.sharding import Shard
from lcab.kernels.base import Kernel, ShapeSpec, Unavailable, Unsupported
from lcab.masks.slices import AttnMask

CPU_REASON = (
    "torch_ring needs CUDA: torch's context_parallel dispatches only the CUDA SDPA ops "
    "(flash / efficient / cudnn); on CPU SDPA lowers to aten._scaled_dot_product_flash_attention_for_cpu "
    "(and its backward), which have no DTensor sharding rule: NotImplementedError in the causal "
    "forward and in every backward"
)
# lcab kernel -> the SDPA backend pinned inside the context (None = SDPA's own choice).
BACKENDS = {
    "sdpa": None,
    "sdpa_flash": "FLASH_ATTENTION",
    "sdpa_efficient": "EFFICIENT_ATTENTION",
    "sdpa_cudnn": "CUDNN_ATTENTION",
}
ROTATE = "alltoall"


@dataclass(frozen=True, kw_only=True)
class TorchRingPlan(RankPlan):
    causal: bool
    load_balance: bool  # torch's head-tail balancer (cp.shard=zigzag on a causal mask)
    backend: str | None  # SDPA backend pinned inside the context
    rep: int  # KV heads repeated this many times (the CP ring ops take MHA)
    seqlen: int


def _api():
    try:
        from torch.distributed.tensor.experimental import context_parallel
        from torch.distributed.tensor.experimental._attention import _cp_options, set_rotate_method
    except ImportError as exc:
        raise Unavailable(f"torch {torch.__version__} has no context_parallel ({exc})") from exc
    return context_parallel, _cp_options, set_rotate_method


@contextlib.contextmanager
def cp_context(mesh, seqlen: int, load_balance: bool, device: torch.device):
    """torch's context_parallel around one SDPA forward or backward on local shards."""
    context_parallel, options, set_rotate_method = _api()
    set_rotate_method(ROTATE)
    old = options.enable_load_balance
    options.enable_load_balance = load_balance
    dummy = torch.empty(seqlen, device=device)  # only its length matters: it picks the balancer
    try:
        with context_parallel(mesh, buffers=[dummy], buffer_seq_dims=[0], no_restore_buffers={dummy}):
            yield
    finally:
        options.enable_load_balance = old


class TorchCPFn(torch.autograd.Function):
    """q, k, v [B, L, H, D] local shards -> out [B, L, H, D]; SDPA inside `enter()` (the CP
    context), for the forward and again for the backward.

    The SDPA call builds an inner graph that the backward differentiates with autograd.grad.
    The harness times the backward alone by calling it repeatedly on one forward (retain_graph),
    so the inner graph is retained too: freeing it after the first backward made the second
    fail ("Trying to backward through the graph a second time"). It lives as long as ctx, i.e.
    as long as the outer graph."""

    @staticmethod
    def forward(ctx, q, k, v, enter, causal, backend):
        with torch.enable_grad(), enter(), _pin(backend):
            qi, ki, vi = (t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v))
            out = F.scaled_dot_product_attention(qi, ki, vi, is_causal=causal)
        ctx.inner = (qi, ki, vi, out)
        ctx.args = (enter, backend)
        return out.detach().transpose(1, 2)

    @staticmethod
    def backward(ctx, dout):
        qi, ki, vi, out = ctx.inner
        enter, backend = ctx.args
        with enter(), _pin(backend):
            dq, dk, dv = torch.autograd.grad(out, (qi, ki, vi), dout.transpose(1, 2), retain_graph=True)
        return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), None, None, None


def _pin(backend: str | None):
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, backend)])


class TorchRing(RingOnly, Strategy):
    name = "torch_ring"
    summary = "peer: PyTorch's context_parallel (ring over SDPA, head-tail load balancing)"
    cannot_emulate = "torch_ring is a peer implementation; cp.emulate runs lcab's strategies only"

    def check(self, cp: Mapping | RingCPConfig, shape: ShapeSpec, world: int) -> Degrees:
        deg = super().check(cp, shape, world)
        _api()
        if shape.device.type != "cuda":
            raise Unavailable(CPU_REASON)
        return deg

    def plan(
        self, mask: AttnMask, shard: Shard, topo: Topology, kernel: Kernel, shape: ShapeSpec
    ) -> TorchRingPlan:
        kind = full_or_causal_only(mask, self.name, " (SDPA is_causal)")
        if kernel.name not in BACKENDS:
            raise Unsupported(
                f"torch_ring runs PyTorch SDPA: kernel {' / '.join(BACKENDS)}, not {kernel.name}"
            )
        if shard.name not in ("contiguous", "zigzag") or shard.notes["pad_tokens"]:
            raise Unsupported(
                f"torch_ring needs equal shards in its own layouts (contiguous, or zigzag = its head-tail "
                f"balancer): cp.shard={shard.name}, seqlen {mask.seqlen_q}, world {topo.world}"
            )
        # Head-tail balancing is torch's causal layout; full attention is indifferent to the order.
        load_balance = kind == "causal" and shard.name == "zigzag"
        if load_balance and mask.seqlen_q % (2 * topo.world):
            raise Unsupported(f"torch's head-tail balancer needs seqlen divisible by {2 * topo.world}")
        rep = shape.heads_q // shape.heads_kv
        notes = {
            "torch_load_balancer": "head_tail" if load_balance else "none",
            "torch_rotate_method": ROTATE,
            "comm_bytes": "not counted (torch's functional collectives bypass lcab's Comm)",
            "compute_ms": "not separable from torch's ring; rank_compute_ms is 0",
        }
        if rep > 1:
            notes["kv_heads_replicated_to"] = shape.heads_q
        return TorchRingPlan(
            shard=shard,
            topo=topo,
            heads_q=shape.heads_q,
            heads_kv=shape.heads_kv,
            area=shard.row_area(mask, topo.rank),
            notes=notes,
            causal=kind == "causal",
            load_balance=load_balance,
            backend=BACKENDS[kernel.name],
            rep=rep,
            seqlen=mask.seqlen_q,
        )

    def attention(self, q, k, v, plan: TorchRingPlan, ctx: RunCtx) -> torch.Tensor:
        if plan.rep > 1:  # the CP ring ops take MHA
            k = k.repeat_interleave(plan.rep, 2)
            v = v.repeat_interleave(plan.rep, 2)
        enter = functools.partial(
            cp_context, ctx.groups["mesh"]["ring"], plan.seqlen, plan.load_balance, q.device
        )
        return TorchCPFn.apply(q, k, v, enter, plan.causal, plan.backend)


def probe(device: str = "cpu", seqlen: int = 32, causal: bool = True) -> dict:
    """Run torch's CP on this process group's device type (no strategy checks); rank 0 gets
    {"ok", "error", "stage" (where it failed), "max_err" (forward vs single-device SDPA)}. Tells whether torch_ring could run here."""
    from torch.distributed.device_mesh import init_device_mesh

    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh(device, (world,))
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, seqlen, 2, 8, generator=g).to(device) for _ in range(3))
    n = seqlen // world
    cut = [t[:, rank * n : (rank + 1) * n].clone().requires_grad_() for t in (q, k, v)]
    res = {"ok": False, "error": "", "max_err": None, "stage": "forward"}
    try:
        enter = functools.partial(cp_context, mesh, seqlen, False, torch.device(device))
        out = TorchCPFn.apply(*cut, enter, causal, None)
        ref = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=causal)
        res["max_err"] = float((out.detach() - ref.transpose(1, 2)[:, rank * n : (rank + 1) * n]).abs().max())
        res["stage"] = "backward"
        out.sum().backward()
        res["ok"] = True
    except Exception as exc:
        res["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    errs = [None] * world
    dist.all_gather_object(errs, res)
    return errs[0] if rank == 0 else None
