"""Shared body of the `sdpa*` adapters: torch's scaled_dot_product_attention, one backend each.

Full and causal masks go in as no mask / is_causal; any other mask as a dense boolean
attn_mask, only for backends that accept one. A backend that cannot take the mask raises
Unsupported here, before timing, instead of letting SDPA pick another backend.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from lcab.kernels.base import AttnFn, Capabilities, Kernel, ShapeSpec, Unsupported, scale
from lcab.masks.forms import is_causal, is_full
from lcab.masks.slices import AttnMask


def pinned(backends: list[SDPBackend] | None):
    return sdpa_kernel(backends) if backends else contextlib.nullcontext()


class SdpaKernel(Kernel):
    backend: SDPBackend | None = None  # None = let SDPA choose (the `sdpa` kernel)
    takes_dense_mask: bool = True
    packages = ("torch",)

    def prepare(self, mask: AttnMask, shape: ShapeSpec) -> AttnFn:
        if mask.seqlen_q != mask.seqlen_k and not is_full(mask):
            raise Unsupported(f"{self.name} takes only square masks beyond full")
        kwargs: dict = {"scale": scale(shape.head_dim)}
        if is_full(mask):
            form = "none"
        elif is_causal(mask):
            kwargs["is_causal"] = True
            form = "is_causal"
        elif self.takes_dense_mask:
            # [S, S] broadcasts over batch and heads.
            kwargs["attn_mask"] = mask.dense(shape.device)
            form = "dense"
        else:
            raise Unsupported(f"{self.name} cannot express {mask.name}: backend takes only full or causal")
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
        devices=devices, dtypes=dtypes, mask_forms=forms, gqa=True, backward=True, returns_lse=False
    )
