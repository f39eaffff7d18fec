"""Shared body of `flash2` and `flash3`: masks go in as causal flag + window_size, documents as
cu_seqlens through the varlen entry point. Arguments come from varlen_args (tested on CPU); the
library is imported only inside available()/prepare()."""

from __future__ import annotations

import inspect

import torch

from lcab.kernels.base import AttnFn, Capabilities, Kernel, ShapeSpec, Unavailable, scale
from lcab.kernels.varlen_args import (
    VarlenMasks,
    batched_doc_lens,
    cu_seqlens_tensor,
    flash_window,
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
    steps=(),  # flash-attn's backward takes its own softmax_lse, not a global one
)


def split_out_lse(result) -> tuple[torch.Tensor, torch.Tensor | None]:
    """flash-attn returns out, (out, lse) or (out, lse, S_dmask) depending on version and flags."""
    if isinstance(result, (tuple, list)):
        return result[0], result[1] if len(result) > 1 else None
    return result, None


class FlashKernel(VarlenMasks, Kernel):
    capabilities = FLASH_CAPABILITIES
    package_hint = ""  # what to install, for the unavailable reason

    def _functions(self):
        """(flash_attn_func, flash_attn_varlen_func); raises ImportError when absent."""
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
        except ImportError as e:
            return False, f"{self.package_hint} not installed ({e})"
        return True, ""

    def prepare(self, mask: AttnMask, shape: ShapeSpec) -> AttnFn:
        form = self.expressed(mask)
        ok, why = self.available(shape.device)
        if not ok:
            raise Unavailable(why)
        dense_fn, varlen_fn = self._functions()
        device = torch.device(shape.device)
        causal, window = flash_window(form.causal, form.window_left, form.window_right)
        kwargs = {"softmax_scale": scale(shape.head_dim), "causal": causal, "window_size": window}
        if "return_attn_probs" in inspect.signature(dense_fn).parameters:
            kwargs["return_attn_probs"] = True  # the only way to get softmax_lse back
        notes = {"mask_form": "causal_flag+window", "window_size": list(window), "causal": causal}

        if len(form.doc_lens) == 1:

            def fn(q, k, v):
                return split_out_lse(dense_fn(q, k, v, **kwargs))

            fn.notes = notes
            return fn

        batch = shape.batch
        lens = batched_doc_lens(form.doc_lens, batch)
        cu = cu_seqlens_tensor(lens, device)
        max_seqlen = max(lens)
        seq, pos = padded_positions(lens, device)

        def fn(q, k, v):
            res = varlen_fn(to_thd(q), to_thd(k), to_thd(v), cu, cu, max_seqlen, max_seqlen, **kwargs)
            out, lse = split_out_lse(res)
            if lse is not None:
                # [H, total] since flash-attn 2.? / FA3; [n_docs, H, max_seqlen] before.
                lse = lse_from_packed(lse, batch) if lse.dim() == 2 else lse_from_padded(lse, seq, pos, batch)
            return from_thd(out, batch), lse

        fn.notes = {**notes, "mask_form": "varlen+causal_flag+window", "n_docs": len(form.doc_lens)}
        return fn
