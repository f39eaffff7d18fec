"""`sdpa_math`: sdpa pinned to the math backend."""

from torch.nn.attention import SDPBackend

from lcab.kernels.base import register
from lcab.kernels.sdpa_common import SdpaKernel, sdpa_capabilities


@register
class SdpaMath(SdpaKernel):
    name = "sdpa_math"
    summary = "sdpa pinned to the math backend"
    backend = SDPBackend.MATH
    takes_dense_mask = True
    capabilities = sdpa_capabilities(
        devices=("cpu", "cuda"), dtypes=("bf16", "fp16", "fp32", "fp64"), dense=True
    )
