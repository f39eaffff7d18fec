"""`sdpa`: sdpa (backend chosen by torch)."""

from lcab.kernels.sdpa_common import SdpaKernel, sdpa_capabilities


class Sdpa(SdpaKernel):
    name = "sdpa"
    summary = "sdpa (backend chosen by torch)"
    backend = None
    capabilities = sdpa_capabilities(
        devices=("cpu", "cuda"), dtypes=("bf16", "fp16", "fp32", "fp64"), dense=True
    )
