"""Shared body of the `sdpa*` adapters: torch's scaled_dot_product_attention, one backend each.

Full and causal masks go in as no mask / is_causal; any other mask as a dense boolean
attn_mask, only for backends that accept one. A backend that cannot take the mask raises
Unsupported here, before timing, instead of letting SDPA pick another backend.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from lcab.kernels.base import AttnFn, Capabilities, Kernel, ShapeSpec, StepFns, Unsupported, scale
from lcab.masks.forms import is_causal, is_full
from lcab.masks.slices import AttnMask


def pinned(backends: list[SDPBackend] | None):
    return sdpa_kernel(backends) if backends else contextlib.nullcontext()


class SdpaKernel(Kernel):
    backend: SDPBackend | None = None  # None = let SDPA choose (the `sdpa` kernel)
    packages = ("torch",)

    def form(self, mask: AttnMask) -> str:
        """How the mask reaches SDPA: none, is_causal or dense; Unsupported where it cannot."""
        if mask.seqlen_q != mask.seqlen_k and not is_full(mask):
            raise Unsupported(f"{self.name} takes only square masks beyond full")
        if is_full(mask):
            return "none"
        if is_causal(mask):
            return "is_causal"
        if "dense" in self.capabilities.mask_forms:  # the backend takes an attn_mask
            return "dense"
        raise Unsupported(f"{self.name} cannot express {mask.name}: backend takes only full or causal")

    def working_set(self, mask: AttnMask, shape: ShapeSpec, mode: str) -> int:
        from lcab.harness import memory

        form = self.form(mask)
        math = self.backend == SDPBackend.MATH or (
            self.backend is None and shape.dtype == torch.float64 and shape.device.type == "cuda"
        )
        if math:
            return memory.materialised(mask, shape, mode, memory.MATH, with_mask=form == "dense")
        work = memory.tiled(mask, shape)
        if form == "dense":  # the boolean mask and the additive bias a fused backend makes of it
            work += memory.dense_mask(mask.seqlen_q, mask.seqlen_k)
            work += mask.seqlen_q * mask.seqlen_k * memory.elem(shape.dtype)
        return work

    def prepare(self, mask: AttnMask, shape: ShapeSpec) -> AttnFn:
        kwargs: dict = {"scale": scale(shape.head_dim)}
        form = self.form(mask)
        if form == "is_causal":
            kwargs["is_causal"] = True
        elif form == "dense":
            # [S, S] broadcasts over batch and heads.
            kwargs["attn_mask"] = mask.dense(shape.device)
        # The `sdpa` kernel leaves the choice to torch; the others pin exactly one backend.
        backends = [self.backend] if self.backend is not None else None
        gqa = self._gqa_native(shape, kwargs, backends)

        def fn(q, k, v):
            qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            if not gqa and kh.shape[1] != qh.shape[1]:
                rep = qh.shape[1] // kh.shape[1]
                kh, vh = kh.repeat_interleave(rep, 1), vh.repeat_interleave(rep, 1)
            with pinned(backends):
                out = F.scaled_dot_product_attention(qh, kh, vh, enable_gqa=gqa, **kwargs)
            return out.transpose(1, 2), None

        fn.notes = {"mask_form": form, "gqa": "native" if gqa else "replicated_kv"}
        return fn

    def step_fns(self, mask: AttnMask, shape: ShapeSpec) -> StepFns:
        return sdpa_step_fns(self, mask, shape)

    @staticmethod
    def _gqa_native(shape: ShapeSpec, kwargs: dict, backends: list) -> bool:
        """Whether the pinned backend takes enable_gqa; probed on a tiny input, outside timing."""
        if shape.heads_q == shape.heads_kv:
            return False
        small = {k: v for k, v in kwargs.items() if k != "attn_mask"}
        q = torch.randn(1, shape.heads_q, 8, shape.head_dim, dtype=shape.dtype, device=shape.device)
        kv = torch.randn(1, shape.heads_kv, 8, shape.head_dim, dtype=shape.dtype, device=shape.device)
        try:
            with pinned(backends):
                F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True, **small)
            return True
        except RuntimeError:
            return False


def sdpa_capabilities(devices: tuple[str, ...], dtypes: tuple[str, ...], dense: bool) -> Capabilities:
    forms = ("none", "is_causal", "dense") if dense else ("none", "is_causal")
    return Capabilities(
        # The private aten ops behind every SDPA backend return the LSE (below): steps wherever
        # the kernel runs.
        devices=devices,
        dtypes=dtypes,
        mask_forms=forms,
        backward=True,
        steps=devices,
    )


# --- Per-step functions for CP (Kernel.step_fns) --------------------------------------------
# The private aten ops behind SDPA return the LSE and have a backward that takes out and lse,
# which is what a ring needs. Schemas checked against torch 2.13 (torch.ops.aten.<op>.default).
# The CUDA variants are written from those schemas and are exercised only on a GPU.


def _empty_rows(mask: AttnMask) -> torch.Tensor | None:
    widths = (mask.row_intervals.hi - mask.row_intervals.lo).sum(axis=1)
    empty = widths == 0
    return torch.from_numpy(empty) if empty.any() else None


def _fix_empty(out: torch.Tensor, lse: torch.Tensor, empty: torch.Tensor | None):
    """Kernels give lse 0 (or nan) on rows that see no key; lcab's contract is out 0, lse -inf."""
    if empty is None:
        return out, lse
    e = empty.to(out.device)
    out = out.masked_fill(e[None, :, None, None], 0)
    lse = lse.masked_fill(e[None, None, :], float("-inf"))
    return out, lse


def _finite(lse: torch.Tensor) -> torch.Tensor:
    """Rows without a visible key have lse -inf; the ops would turn exp(s - lse) into nan there.
    Such a row is empty in every step, so any finite value gives its zero gradient."""
    return torch.where(torch.isinf(lse), 0, lse)


def _replicate_kv(k: torch.Tensor, v: torch.Tensor, hq: int):
    rep = hq // k.shape[2]
    if rep == 1:
        return k, v, 1
    return k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2), rep


def _sum_rep(dk: torch.Tensor, dv: torch.Tensor, rep: int):
    if rep == 1:
        return dk, dv
    b, s, h, d = dk.shape
    return dk.view(b, s, h // rep, rep, d).sum(3), dv.view(b, s, h // rep, rep, d).sum(3)


def sdpa_step_fns(kernel: SdpaKernel, mask: AttnMask, shape: ShapeSpec) -> StepFns:
    from lcab.kernels.torch_eager import eager_step_fns

    backend = kernel.backend
    dev = shape.device.type
    if backend == SDPBackend.MATH:
        # The math backend is the eager formula; its private op returns probabilities, not an
        # LSE, so the step uses lcab's exact eager formula (same math, fp32 accumulation).
        return eager_step_fns(mask, shape, form="dense (math formula)")
    square = mask.seqlen_q == mask.seqlen_k
    full, causal = is_full(mask), square and is_causal(mask)
    dense_ok = "dense" in kernel.capabilities.mask_forms or (dev == "cpu" and backend is None)
    if not (full or causal or dense_ok):
        raise Unsupported(f"{kernel.name} cannot express a CP step mask that is neither full nor causal")
    sc = scale(shape.head_dim)
    empty = _empty_rows(mask)

    def bias(dtype):
        if full or causal:
            return None
        # Memory-efficient attention needs the bias row stride to be a multiple of 8 elements:
        # allocate padded columns and view the first seqlen_k of them.
        cols = -(-mask.seqlen_k // 8) * 8
        full_b = torch.zeros(mask.seqlen_q, cols, dtype=dtype, device=shape.device)
        full_b[:, : mask.seqlen_k].masked_fill_(~mask.dense(shape.device), float("-inf"))
        return full_b[:, : mask.seqlen_k]

    form = "none" if full else ("is_causal" if causal else "dense")
    if dev == "cpu":
        if backend not in (None, SDPBackend.FLASH_ATTENTION):
            raise Unsupported(f"{kernel.name} has no CPU step op")
        b = bias(shape.dtype)
        fwd_op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
        bwd_op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default

        def fwd(q, k, v):
            k, v, _ = _replicate_kv(k, v, q.shape[2])
            o, lse = fwd_op(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0.0, causal, attn_mask=b, scale=sc
            )
            return _fix_empty(o.transpose(1, 2), lse if lse.dtype == torch.float64 else lse.float(), empty)

        def bwd(dout, q, k, v, out, lse):
            k, v, rep = _replicate_kv(k, v, q.shape[2])
            t = [x.transpose(1, 2) for x in (dout, q, k, v, out)]
            lse = _finite(lse.to(q.dtype if q.dtype == torch.float64 else torch.float32)).contiguous()
            dq, dk, dv = bwd_op(*t, lse, 0.0, causal, attn_mask=b, scale=sc)
            dk, dv = _sum_rep(dk.transpose(1, 2), dv.transpose(1, 2), rep)
            return dq.transpose(1, 2), dk, dv

        return StepFns(fwd, bwd, form)
    return _cuda_step_fns(kernel, mask, shape, full, causal, bias, empty, form, sc)


def _cuda_step_fns(kernel, mask, shape, full, causal, bias, empty, form, sc) -> StepFns:
    backend = kernel.backend
    if backend is None:
        backend = SDPBackend.FLASH_ATTENTION if (full or causal) else SDPBackend.EFFICIENT_ATTENTION
    aten = torch.ops.aten
    sq, sk = mask.seqlen_q, mask.seqlen_k
    state: dict = {"gqa_native": False}

    def _rep_kv(k, v, hq):  # replicate only where the op needs it (see _settle_gqa)
        return (k, v, 1) if state["gqa_native"] else _replicate_kv(k, v, hq)

    def heads_first(*xs):
        return [x.transpose(1, 2) for x in xs]

    if backend == SDPBackend.FLASH_ATTENTION:
        if not (full or causal):
            raise Unsupported(f"{kernel.name} (flash) takes only full or causal step masks")

        def fwd(q, k, v):
            k, v, _ = _rep_kv(k, v, q.shape[2])
            r = aten._scaled_dot_product_flash_attention.default(
                *heads_first(q, k, v), 0.0, causal, False, scale=sc
            )
            # cum_seq (int32, empty for dense batches) and rng state go back into the backward.
            state["fwd"] = (r[2], r[3], r[6], r[7])
            return _fix_empty(r[0].transpose(1, 2), r[1].float(), empty)

        def bwd(dout, q, k, v, out, lse):
            k, v, rep = _rep_kv(k, v, q.shape[2])
            cum_q, cum_k, seed, off = state["fwd"]
            dq, dk, dv = aten._scaled_dot_product_flash_attention_backward.default(
                *heads_first(dout, q, k, v, out),
                _finite(lse.float()).contiguous(),
                cum_q,
                cum_k,
                sq,
                sk,
                0.0,
                causal,
                seed,
                off,
                scale=sc,
            )
            dk, dv = _sum_rep(dk.transpose(1, 2), dv.transpose(1, 2), rep)
            return dq.transpose(1, 2), dk, dv

        return _settle_gqa(StepFns(fwd, bwd, form), state, mask, shape)
    if backend == SDPBackend.EFFICIENT_ATTENTION:
        b = bias(shape.dtype)

        def fwd(q, k, v):
            k, v, _ = _rep_kv(k, v, q.shape[2])
            bb = None if b is None else b.expand(q.shape[0], q.shape[2], sq, sk)
            o, lse, seed, off = aten._scaled_dot_product_efficient_attention.default(
                *heads_first(q, k, v), bb, True, 0.0, causal, scale=sc
            )
            state["rng"] = (seed, off)
            return _fix_empty(o.transpose(1, 2), lse[..., :sq].float(), empty)

        def bwd(dout, q, k, v, out, lse):
            k, v, rep = _rep_kv(k, v, q.shape[2])
            seed, off = state["rng"]
            # None reaches the op as an undefined tensor: no bias (an empty tensor would be one).
            bb = b.expand(q.shape[0], q.shape[2], sq, sk) if b is not None else None
            pad = (-sq) % 32
            lse = torch.nn.functional.pad(_finite(lse.float()), (0, pad)).contiguous()
            dq, dk, dv, _ = aten._scaled_dot_product_efficient_attention_backward.default(
                *heads_first(dout, q, k, v),
                bb,
                out.transpose(1, 2),
                lse,
                seed,
                off,
                0.0,
                [True, True, True, False],
                causal,
                scale=sc,
            )
            dk, dv = _sum_rep(dk.transpose(1, 2), dv.transpose(1, 2), rep)
            return dq.transpose(1, 2), dk, dv

        return _settle_gqa(StepFns(fwd, bwd, form), state, mask, shape)
    if backend == SDPBackend.CUDNN_ATTENTION:
        if not (full or causal):
            raise Unsupported(f"{kernel.name} takes only full or causal step masks")

        def fwd(q, k, v):
            k, v, _ = _rep_kv(k, v, q.shape[2])
            r = aten._scaled_dot_product_cudnn_attention.default(
                *heads_first(q, k, v), None, True, 0.0, causal, False, scale=sc
            )
            state["fwd"] = (r[2], r[3], r[6], r[7])
            state["lse_shape"] = r[1].shape
            return _fix_empty(
                r[0].transpose(1, 2), r[1].reshape(r[1].shape[0], r[1].shape[1], sq).float(), empty
            )

        def bwd(dout, q, k, v, out, lse):
            k, v, rep = _rep_kv(k, v, q.shape[2])
            cum_q, cum_k, seed, off = state["fwd"]
            lse = _finite(lse.float()).reshape(state["lse_shape"]).contiguous()
            # attn_bias None = undefined tensor; an empty one would be taken for a bias.
            dq, dk, dv = aten._scaled_dot_product_cudnn_attention_backward.default(
                *heads_first(dout, q, k, v, out),
                lse,
                seed,
                off,
                None,
                cum_q,
                cum_k,
                sq,
                sk,
                0.0,
                causal,
                scale=sc,
            )
            dk, dv = _sum_rep(dk.transpose(1, 2), dv.transpose(1, 2), rep)
            return dq.transpose(1, 2), dk, dv

        return _settle_gqa(StepFns(fwd, bwd, form), state, mask, shape)
    raise Unsupported(f"{kernel.name} has no step op for backend {backend}")


def _settle_gqa(fns: StepFns, state: dict, mask: AttnMask, shape: ShapeSpec) -> StepFns:
    """Use K/V with fewer heads directly where the op accepts them and gives the same result as
    replicated K/V (checked once, outside timing, at the step's own size); else replicate."""
    if shape.heads_q == shape.heads_kv:
        return fns
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(s, h):
        return torch.randn(1, s, h, shape.head_dim, generator=g).to(shape.device, shape.dtype)

    q, dout = rnd(mask.seqlen_q, shape.heads_q), rnd(mask.seqlen_q, shape.heads_q)
    k, v = rnd(mask.seqlen_k, shape.heads_kv), rnd(mask.seqlen_k, shape.heads_kv)
    ref_o, ref_l = fns.fwd(q, k, v)
    ref_g = fns.bwd(dout, q, k, v, ref_o, ref_l)
    state["gqa_native"] = True
    try:
        o, lse = fns.fwd(q, k, v)
        grads = fns.bwd(dout, q, k, v, o, lse)
        same = all(
            a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=2e-2, rtol=2e-2)
            for a, b in zip((o, *grads), (ref_o, *ref_g), strict=True)
        )
    except RuntimeError:
        same = False
    state["gqa_native"] = same
    return dataclasses.replace(fns, form=fns.form + (", gqa native" if same else ", gqa replicated"))
