"""`sdpa_efficient`: sdpa pinned to the memory-efficient backend."""

from torch.nn.attention import SDPBackend

from lcab.kernels.base import register
from lcab.kernels.sdpa_common import SdpaKernel, sdpa_capabilities


@register
class SdpaEfficient(SdpaKernel):
    name = "sdpa_efficient"
    summary = "sdpa pinned to the memory-efficient backend"
    backend = SDPBackend.EFFICIENT_ATTENTION
    takes_dense_mask = True
    capabilities = sdpa_capabilities(devices=("cuda",), dtypes=("bf16", "fp16", "fp32"), dense=True)
