"""`flash4`: FlashAttention-4 (PyPI flash-attn-4, `flash_attn.cute`, CuTe DSL; forward and
backward on Hopper and Blackwell). Full, causal, windows and documents as causal flag +
window_size (None = unbounded) and cu_seqlens; every other mask with at most two key intervals
per row through a mask_mod over the mask's own row intervals (aux tensors), which visits every
tile (no block sparsity here). CP steps through its varlen _flash_attn_fwd / _flash_attn_bwd.
Kernels are compiled at their first call, outside timing (rows record first_call_ms);
FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 keeps them across processes."""

from __future__ import annotations

import functools
import importlib

import torch

from lcab.kernels.base import AttnFn, Capabilities, ShapeSpec, Unsupported, package_versions, scale
from lcab.kernels.flash_args import IntervalForm, fa4_conflict, interval_form
from lcab.kernels.flash_family import FlashKernel, split_out_lse
from lcab.masks.slices import AttnMask


@functools.cache
def _interface_or_reason():
    """(flash_attn.cute.interface, None), or (None, why not); once per process: the import and
    the check do not change while it runs, and prepare() / step_fns() ask for every cell."""
    error = None
    try:
        iface = importlib.import_module("flash_attn.cute.interface")
        for attr in ("flash_attn_func", "flash_attn_varlen_func", "_flash_attn_fwd", "_flash_attn_bwd"):
            getattr(iface, attr)
    except (ImportError, AttributeError) as e:
        error, iface = f"{type(e).__name__}: {e}", None
    versions = package_versions(("flash-attn", "flash-attn-4"))
    installed = {k: (None if v == "absent" else v) for k, v in versions.items()}
    why = fa4_conflict(installed, error)
    return (None, why) if why is not None else (iface, None)


class Flash4(FlashKernel):
    name = "flash4"
    summary = (
        "FlashAttention-4 (flash_attn.cute, CuTe DSL): causal flag + window_size, documents and CP "
        "steps through cu_seqlens; other masks through a row-interval mask_mod"
    )
    packages = ("flash-attn-4", "nvidia-cutlass-dsl", "flash-attn")
    package_hint = "flash-attn-4"
    unbounded = None
    capabilities = Capabilities(
        devices=("cuda",),
        dtypes=("bf16", "fp16"),
        mask_forms=("causal_flag", "window", "varlen", "mask_mod"),
        backward=True,
        steps=("cuda",),
    )

    def _interface(self):
        iface, why = _interface_or_reason()
        if why is not None:
            raise ImportError(why)
        return iface

    def _functions(self):
        iface = self._interface()
        return iface.flash_attn_func, iface.flash_attn_varlen_func

    def _step_functions(self):
        iface = self._interface()
        return iface._flash_attn_fwd, iface._flash_attn_bwd

    def _missing(self, error: Exception) -> str:
        return str(error)  # _interface() already says what is missing or in conflict

    def _arch(self, device: torch.device) -> tuple[bool, str]:
        major, minor = torch.cuda.get_device_capability(device)
        if major not in (9, 10, 11, 12):
            return (
                False,
                f"FlashAttention-4 needs sm90 or newer (Hopper, Blackwell), this GPU is sm{major}{minor}",
            )
        return True, ""

    def expressed(self, mask: AttnMask):
        """The varlen form where there is one, else the mask's row intervals for the mask_mod."""
        try:
            return super().expressed(mask)
        except Unsupported as varlen_why:
            try:
                return interval_form(mask)
            except Unsupported as e:
                raise Unsupported(f"{varlen_why}; {e}") from None

    def prepare(self, mask: AttnMask, shape: ShapeSpec) -> AttnFn:
        form = self.expressed(mask)
        if not isinstance(form, IntervalForm):
            return super().prepare(mask, shape)
        self._ready(shape)
        from lcab.kernels import flash4_mask_mod

        dense_fn, _ = self._functions()
        device = torch.device(shape.device)
        aux = [torch.from_numpy(a).to(device) for a in form.aux()]
        mask_mod = flash4_mask_mod.BY_INTERVALS[form.intervals]
        softmax_scale = scale(shape.head_dim)

        def fn(q, k, v):
            res = dense_fn(
                q, k, v, softmax_scale=softmax_scale, mask_mod=mask_mod, aux_tensors=aux, return_lse=True
            )
            return split_out_lse(res)

        fn.notes = {"mask_form": f"mask_mod(row intervals x{form.intervals}), every tile visited"}
        return fn
