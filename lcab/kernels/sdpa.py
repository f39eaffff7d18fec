"""`sdpa`: sdpa (backend chosen by torch)."""

from lcab.kernels.base import register
from lcab.kernels.sdpa_common import SdpaKernel, sdpa_capabilities


@register
class Sdpa(SdpaKernel):
    name = "sdpa"
    summary = "sdpa (backend chosen by torch)"
    backend = None
    takes_dense_mask = True
    capabilities = sdpa_capabilities(
        devices=("cpu", "cuda"), dtypes=("bf16", "fp16", "fp32", "fp64"), dense=True
    )
