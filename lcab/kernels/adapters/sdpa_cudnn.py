"""`sdpa_cudnn`: sdpa pinned to the cuDNN backend."""

from torch.nn.attention import SDPBackend

from lcab.kernels.sdpa_common import SdpaKernel, sdpa_capabilities


class SdpaCudnn(SdpaKernel):
    name = "sdpa_cudnn"
    summary = "sdpa pinned to the cuDNN backend"
    backend = SDPBackend.CUDNN_ATTENTION
    capabilities = sdpa_capabilities(devices=("cuda",), dtypes=("bf16", "fp16"), dense=False)
