"""`sdpa_efficient`: sdpa pinned to the memory-efficient backend."""

from torch.nn.attention import SDPBackend

from lcab.kernels.sdpa_common import SdpaKernel, sdpa_capabilities


class SdpaEfficient(SdpaKernel):
    name = "sdpa_efficient"
    summary = "sdpa pinned to the memory-efficient backend"
    backend = SDPBackend.EFFICIENT_ATTENTION
    capabilities = sdpa_capabilities(devices=("cuda",), dtypes=("bf16", "fp16", "fp32"), dense=True)
