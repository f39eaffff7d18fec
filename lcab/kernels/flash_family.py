"""The body flash2, flash3 and flash4 share: a whole mask as causal flag + window_size, documents
as cu_seqlens through the varlen entry point; CP steps as one varlen call per step sub-mask
(lcab.kernels.flash_args) whose backward takes the GLOBAL out and LSE, as ring-style CP needs.

An adapter names its public functions (whole-mask cells, through the library's own autograd)
and its varlen forward/backward internals (steps), its "unbounded" window value, its
architecture check and its capability table; everything else is here. Libraries are imported
only inside available()/prepare()/step_fns()."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lcab.kernels.base import AttnFn, Capabilities, Kernel, ShapeSpec, StepFns, Unavailable, scale
from lcab.kernels.flash_args import FlashStep, call_by_name, call_values, flash_step, lse_of, window_args
from lcab.kernels.sdpa_common import _finite
from lcab.kernels.varlen_args import (
    VarlenMasks,
    batched_doc_lens,
    cu_seqlens_tensor,
    cudnn_band,
    from_thd,
    lse_from_packed,
    lse_from_padded,
    padded_positions,
    to_thd,
)
from lcab.masks.slices import AttnMask

FLASH_CAPABILITIES = Capabilities(
    devices=("cuda",),
    dtypes=("bf16", "fp16"),
    mask_forms=("causal_flag", "window", "varlen"),
    backward=True,
    steps=("cuda",),
)


def split_out_lse(result) -> tuple[torch.Tensor, torch.Tensor | None]:
    """flash-attn returns out, (out, lse) or (out, lse, S_dmask) depending on version and flags."""
    if isinstance(result, (tuple, list)):
        return result[0], result[1] if len(result) > 1 else None
    return result, None


class FlashKernel(VarlenMasks, Kernel):
    capabilities = FLASH_CAPABILITIES
    package_hint = ""  # what to install, for the unavailable reason
    unbounded: int | None = -1  # the library's window_size value for "no limit"

    def _functions(self) -> tuple[Callable, Callable]:
        """(flash_attn_func, flash_attn_varlen_func); raises ImportError when absent."""
        raise NotImplementedError

    def _step_functions(self) -> tuple[Callable, Callable]:
        """The varlen forward returning the LSE and the backward taking one (library internals)."""
        raise NotImplementedError

    def _arch(self, device: torch.device) -> tuple[bool, str]:
        raise NotImplementedError

    def available(self, device: torch.device) -> tuple[bool, str]:
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            return False, f"{self.name} needs CUDA"
        ok, why = self._arch(device)
        if not ok:
            return False, why
        try:
            self._functions()
            self._step_functions()
        except (ImportError, AttributeError) as e:
            return False, self._missing(e)
        return True, ""

    def _missing(self, error: Exception) -> str:
        """The unavailable reason when the library does not import (or lacks a function)."""
        return f"{self.package_hint} not installed ({error})"

    def _ready(self, shape: ShapeSpec) -> None:
        ok, why = self.available(shape.device)
        if not ok:
            raise Unavailable(why)

    def prepare(self, mask: AttnMask, shape: ShapeSpec) -> AttnFn:
        form = self.expressed(mask)
        self._ready(shape)
        dense_fn, varlen_fn = self._functions()
        device = torch.device(shape.device)
        # Documents are square, so the top-left band of the form is flash-attn's bottom-right one.
        causal, window = window_args(
            *cudnn_band(form.causal, form.window_left, form.window_right), self.unbounded
        )
        base = {"softmax_scale": scale(shape.head_dim), "causal": causal, "window_size": window}
        base |= {"return_attn_probs": True, "return_lse": True, "dropout_p": 0.0}
        notes = {"mask_form": "causal_flag+window", "window_size": list(window), "causal": causal}

        if len(form.doc_lens) == 1:

            def fn(q, k, v):
                return split_out_lse(call_by_name(dense_fn, {**base, "q": q, "k": k, "v": v}))

            fn.notes = notes
            return fn

        batch = shape.batch
        lens = batched_doc_lens(form.doc_lens, batch)
        cu = cu_seqlens_tensor(lens, device)
        max_seqlen = max(lens)
        seq, pos = padded_positions(lens, device)
        varlen = {**base, "cu_seqlens_q": cu, "cu_seqlens_k": cu}
        varlen |= {"max_seqlen_q": max_seqlen, "max_seqlen_k": max_seqlen}

        def fn(q, k, v):
            res = call_by_name(varlen_fn, {**varlen, "q": to_thd(q), "k": to_thd(k), "v": to_thd(v)})
            out, lse = split_out_lse(res)
            if lse is not None:
                # [H, total] since flash-attn 2.? / FA3 / FA4; [n_docs, H, max_seqlen] before.
                lse = lse_from_packed(lse, batch) if lse.dim() == 2 else lse_from_padded(lse, seq, pos, batch)
            return from_thd(out, batch), lse

        fn.notes = {**notes, "mask_form": "varlen+causal_flag+window", "n_docs": len(form.doc_lens)}
        return fn

    def step_fns(self, mask: AttnMask, shape: ShapeSpec) -> StepFns:
        step = flash_step(mask, shape.batch, self.unbounded)  # Unsupported before the library
        self._ready(shape)
        fwd_fn, bwd_fn = self._step_functions()
        return flash_step_fns(step, shape, fwd_fn, bwd_fn)


def _tensors(step: FlashStep, shape: ShapeSpec) -> dict:
    device = torch.device(shape.device)
    values = call_values(step, scale(shape.head_dim))
    for key in ("cu_seqlens_q", "cu_seqlens_k"):
        values[key] = torch.tensor(values[key], dtype=torch.int32, device=device)
    return values


class _Side:
    """Gather rows of a [B, S, H, D] buffer into the packed [T, H, D] order and scatter back."""

    def __init__(self, packed, device) -> None:
        self.packed, self.span = packed, packed.span
        self.idx = None if self.span is not None else packed.index().to(device)

    def take(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, *x.shape[2:])
        if self.span is not None:
            return flat[self.span[0] : self.span[1]]
        return flat.index_select(0, self.idx)

    def put(self, packed: torch.Tensor, shape: tuple[int, ...], fill: float = 0.0) -> torch.Tensor:
        """[T, ...] rows back into a [B*S, ...] buffer viewed as `shape`, `fill` elsewhere."""
        if self.packed.whole:
            return packed.reshape(shape)
        full = torch.full(
            (self.packed.total, *packed.shape[1:]), fill, dtype=packed.dtype, device=packed.device
        )
        if self.span is not None:
            full[self.span[0] : self.span[1]] = packed
        else:
            full.index_copy_(0, self.idx, packed)
        return full.reshape(shape)

    def take_lse(self, lse: torch.Tensor) -> torch.Tensor:
        """lcab's [B, H, S] -> the library's [H, T] for the packed rows."""
        b, h, s = lse.shape
        flat = lse.permute(1, 0, 2).reshape(h, b * s)
        rows = (
            flat[:, self.span[0] : self.span[1]] if self.span is not None else flat.index_select(1, self.idx)
        )
        return rows.contiguous()

    def put_lse(self, lse: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
        """The library's [H, T] -> lcab's [B, H, S]; rows in no sequence: -inf."""
        h = lse.shape[0]
        full = self.put(lse.t().contiguous(), (batch * seqlen, h), float("-inf"))
        return full.view(batch, seqlen, h).permute(0, 2, 1)


def flash_step_fns(step: FlashStep, shape: ShapeSpec, fwd_fn: Callable, bwd_fn: Callable) -> StepFns:
    """StepFns from a library's varlen forward/backward (or stand-ins with their conventions)."""
    device = torch.device(shape.device)
    values = _tensors(step, shape)
    qs, ks = _Side(step.q, device), _Side(step.k, device)
    b, sq = shape.batch, step.layout.seqlen_q

    def fwd(q, k, v):
        res = call_by_name(fwd_fn, {**values, "q": qs.take(q), "k": ks.take(k), "v": ks.take(v)})
        out = res[0] if isinstance(res, (tuple, list)) else res
        lse = lse_of(res, shape.heads_q, int(sum(step.q.lens)))
        lse = torch.where(torch.isfinite(lse), lse, float("-inf"))  # flash-attn 2 gives +inf
        return qs.put(out, q.shape), qs.put_lse(lse, b, sq)

    def bwd(dout, q, k, v, out, lse):
        pq, pk, pv = qs.take(q), ks.take(k), ks.take(v)
        grads = {"dq": torch.empty_like(pq), "dk": torch.empty_like(pk), "dv": torch.empty_like(pv)}
        args = {**values, **grads, "q": pq, "k": pk, "v": pv, "dout": qs.take(dout).contiguous()}
        args |= {"out": qs.take(out).contiguous(), "lse": qs.take_lse(_finite(lse))}
        res = call_by_name(bwd_fn, args)
        dq, dk, dv = res[:3] if isinstance(res, (tuple, list)) and len(res) >= 3 else grads.values()
        return qs.put(dq, q.shape), ks.put(dk, k.shape), ks.put(dv, v.shape)

    return StepFns(fwd, bwd, f"{step.describe()}, gqa native")
