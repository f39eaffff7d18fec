"""`flash2`: FlashAttention-2 (flash-attn): flash_attn_func / flash_attn_varlen_func, CP steps
through its varlen forward/backward internals (the global LSE goes into the backward)."""

from __future__ import annotations

import torch

from lcab.kernels.flash_family import FlashKernel


class Flash2(FlashKernel):
    name = "flash2"
    summary = (
        "FlashAttention-2: causal flag + window_size; documents and CP steps through cu_seqlens (varlen)"
    )
    packages = ("flash-attn",)
    package_hint = "flash-attn"
    unbounded = -1

    def _functions(self):
        from flash_attn import flash_attn_func, flash_attn_varlen_func

        return flash_attn_func, flash_attn_varlen_func

    def _step_functions(self):
        from flash_attn import flash_attn_interface as fa2

        return fa2._flash_attn_varlen_forward, fa2._flash_attn_varlen_backward

    def _arch(self, device: torch.device) -> tuple[bool, str]:
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return False, f"FlashAttention-2 needs Ampere sm80 or newer, this GPU is sm{major}{minor}"
        return True, ""
