"""`sdpa_math`: sdpa pinned to the math backend."""

from torch.nn.attention import SDPBackend

from lcab.kernels.sdpa_common import SdpaKernel, sdpa_capabilities


class SdpaMath(SdpaKernel):
    name = "sdpa_math"
    summary = "sdpa pinned to the math backend"
    backend = SDPBackend.MATH
    capabilities = sdpa_capabilities(
        devices=("cpu", "cuda"), dtypes=("bf16", "fp16", "fp32", "fp64"), dense=True
    )
