"""`flex`: torch's FlexAttention with a BlockMask built from the mask's slices (every pattern).

On CUDA the kernel is torch.compile'd (KernelConfig.compile, default on); uncompiled flex is
an unfused reference path that materialises the scores, fine for tests but not a benchmark.
On CPU (torch 2.13, checked): flex has no backward at all, and the compiled CPU kernel does not
return the LSE, so CPU always runs uncompiled, and a backward through it raises Unsupported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from lcab.kernels.base import AttnFn, Capabilities, Kernel, KernelOptions, ShapeSpec, Unsupported, scale
from lcab.masks.slices import AttnMask

_COMPILED: dict[bool, object] = {}


def _compiled_flex(dynamic: bool):
    """One compiled flex_attention per process and `dynamic`. Static: it recompiles per shape
    and per mask_mod (~7 s each with the backward, on an H100); dynamic: per mask_mod only."""
    if dynamic not in _COMPILED:
        import torch._dynamo.config
        import torch._functorch.config
        from torch.nn.attention.flex_attention import flex_attention

        # The harness times backward alone with retain_graph; donated buffers break that.
        torch._functorch.config.donated_buffer = False
        # Each (mask, seqlen) cell is one more recompile of the same code object. Past dynamo's
        # limit (8) it would silently run the uncompiled, materialising flex: raise the limit
        # and make reaching it an error instead of a silent substitute.
        cfg = torch._dynamo.config
        cfg.recompile_limit = max(cfg.recompile_limit, 512)
        if hasattr(cfg, "fail_on_recompile_limit_hit"):
            cfg.fail_on_recompile_limit_hit = True
        _COMPILED[dynamic] = torch.compile(flex_attention, dynamic=dynamic)
    return _COMPILED[dynamic]


def _quiet_uncompiled_warning() -> None:
    """CPU flex runs uncompiled by design (see above); torch's 9-line advice to compile it would
    print on every CPU flex cell. Only that message, from flex_attention's module, is ignored."""
    warnings.filterwarnings(
        "ignore",
        message=r"flex_attention called without torch\.compile\(\)",
        category=UserWarning,
        module=r"torch\.nn\.attention\.flex_attention",
    )


class _ForwardOnly(torch.autograd.Function):
    """CPU flex: torch refuses inputs that require grad, even under no_grad. Run the forward on
    detached inputs and make a later backward say why it cannot run, so fwd cells still time."""

    @staticmethod
    def forward(ctx, q, k, v, attention):
        out, lse = attention(q.detach(), k.detach(), v.detach())
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        raise Unsupported("flex has no backward on CPU (torch's FlexAttention is forward-only there)")


@dataclass(frozen=True)
class FlexOptions(KernelOptions):
    block_size: int = 128  # BlockMask tile
    compile: bool = True  # torch.compile on CUDA
    dynamic: bool = False  # compile for symbolic sequence lengths (one compile per mask_mod)
    # Which mask_mod form (lcab.masks.flex.FORMS; kernel.mask_mod, lcab.config.FlexConfig): None,
    # the default, is each mask's own form; scripts/flex_mask_mod_check.py compares forms.
    mask_mod: str | None = None


class Flex(Kernel):
    name = "flex"
    summary = "torch FlexAttention + BlockMask (compiled on CUDA; CPU: uncompiled, forward only)"
    packages = ("torch", "triton")
    capabilities = Capabilities(
        devices=("cpu", "cuda"),
        dtypes=("bf16", "fp16", "fp32"),
        mask_forms=("block_mask",),
        backward=True,
        backward_devices=("cuda",),  # CPU: refused before any forward runs (and by _ForwardOnly)
        steps=(),  # flex has no backward from a given out/lse
    )
    Options = FlexOptions
    options: FlexOptions

    def working_set(self, mask: AttnMask, shape: ShapeSpec, mode: str) -> int:
        from lcab.harness import memory
        from lcab.masks.flex import mask_mod_kind

        dense = (self.options.mask_mod or mask_mod_kind(mask)) == "dense"
        if not (self.options.compile and shape.device.type == "cuda"):
            return memory.materialised(mask, shape, mode, memory.FLEX_UNFUSED)  # the unfused path
        tiles = -(-mask.seqlen_q // 128) * -(-mask.seqlen_k // 128) * 16  # BlockMask tables
        extra = memory.dense_mask(mask.seqlen_q, mask.seqlen_k) if dense else 0
        return memory.tiled(mask, shape) + tiles + extra

    def prepare(self, mask: AttnMask, shape: ShapeSpec) -> AttnFn:
        from torch.nn.attention.flex_attention import AuxRequest, flex_attention

        from lcab.masks.flex import block_mask, mask_mod_kind

        device = torch.device(shape.device)
        block = int(self.options.block_size)
        compiled = bool(self.options.compile) and device.type == "cuda"
        form = self.options.mask_mod or mask_mod_kind(mask)
        bm = block_mask(mask, block, device, form)
        dynamic = bool(self.options.dynamic)
        attend = _compiled_flex(dynamic) if compiled else flex_attention
        gqa = shape.heads_q != shape.heads_kv
        sm_scale = scale(shape.head_dim)
        on_cpu = device.type == "cpu"
        if on_cpu:
            _quiet_uncompiled_warning()
        aux = AuxRequest(lse=True)

        def attention(q, k, v):
            out, extra = attend(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                block_mask=bm,
                scale=sm_scale,
                enable_gqa=gqa,
                return_aux=aux,
            )
            return out.transpose(1, 2), extra.lse

        def fn(q, k, v):
            if on_cpu and (q.requires_grad or k.requires_grad or v.requires_grad):
                return _ForwardOnly.apply(q, k, v, attention)
            return attention(q, k, v)

        fn.notes = {"mask_form": "block_mask", "block_size": block, "compiled": compiled, "mask_mod": form}
        if compiled:
            fn.notes["dynamic_shapes"] = dynamic
        return fn
