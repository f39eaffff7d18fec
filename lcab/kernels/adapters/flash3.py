"""`flash3`: FlashAttention-3 (Hopper build, module flash_attn_interface); CP steps through its
_flash_attn_forward/_flash_attn_backward with cu_seqlens (the global LSE into the backward)."""

from __future__ import annotations

import torch

from lcab.kernels.flash_family import FlashKernel


def _fa3():
    try:
        import flash_attn_interface as fa3
    except ImportError:
        from flash_attn_3 import flash_attn_interface as fa3
    return fa3


class Flash3(FlashKernel):
    name = "flash3"
    summary = (
        "FlashAttention-3 (Hopper): causal flag + window_size; documents and CP steps through cu_seqlens"
    )
    packages = ("flash_attn_3", "flashattn-hopper")
    package_hint = "FlashAttention-3 (flash_attn_interface)"
    unbounded = -1

    def _functions(self):
        fa3 = _fa3()
        return fa3.flash_attn_func, fa3.flash_attn_varlen_func

    def _step_functions(self):
        fa3 = _fa3()
        return fa3._flash_attn_forward, fa3._flash_attn_backward

    def _arch(self, device: torch.device) -> tuple[bool, str]:
        major, minor = torch.cuda.get_device_capability(device)
        if major != 9:
            return False, f"FlashAttention-3 needs Hopper sm90, this GPU is sm{major}{minor}"
        return True, ""
