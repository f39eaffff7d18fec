"""`sdpa_flash`: sdpa pinned to the flash backend (FA2 inside torch)."""

from torch.nn.attention import SDPBackend

from lcab.kernels.sdpa_common import SdpaKernel, sdpa_capabilities


class SdpaFlash(SdpaKernel):
    name = "sdpa_flash"
    summary = "sdpa pinned to the flash backend (FA2 inside torch)"
    backend = SDPBackend.FLASH_ATTENTION
    capabilities = sdpa_capabilities(devices=("cpu", "cuda"), dtypes=("bf16", "fp16", "fp32"), dense=False)
