"""`flash3`: FlashAttention-3 (Hopper build, module flash_attn_interface)."""

from __future__ import annotations

import torch

from lcab.kernels.flash_common import FlashKernel


class Flash3(FlashKernel):
    name = "flash3"
    summary = "FlashAttention-3 (Hopper): causal flag + window_size; documents through cu_seqlens (varlen)"
    packages = ("flash_attn_3", "flashattn-hopper")
    package_hint = "FlashAttention-3 (flash_attn_interface)"

    def _functions(self):
        try:
            import flash_attn_interface as fa3
        except ImportError:
            from flash_attn_3 import flash_attn_interface as fa3
        return fa3.flash_attn_func, fa3.flash_attn_varlen_func

    def _arch(self, device: torch.device) -> tuple[bool, str]:
        major, minor = torch.cuda.get_device_capability(device)
        if major != 9:
            return False, f"FlashAttention-3 needs Hopper sm90, this GPU is sm{major}{minor}"
        return True, ""
