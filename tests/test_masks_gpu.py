"""On CUDA only: the compiled BlockMask path and the compiled Flex kernel agree with the dense mask.

Skipped without a GPU (CI). It checks what the CPU tests cannot: torch.compile(create_block_mask)
gives the same block structure as the eager CPU construction, and the Triton Flex kernel, which
evaluates mask_mod on the padding of partial blocks, reproduces SDPA with the dense mask.
"""

from __future__ import annotations

import pytest
import torch

from lcab.config import mask_config
from lcab.masks import build, names

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

SMALL = {
    "window": 100,
    "block": 256,
    "sparse_block": 128,
    "density": 0.3,
    "prefix": 0.37,
    "long_min": 500,
    "long_max": 3000,
}


def _blocks(bm):
    num, idx = bm.kv_num_blocks[0, 0].cpu(), bm.kv_indices[0, 0].cpu()
    fnum, fidx = bm.full_kv_num_blocks[0, 0].cpu(), bm.full_kv_indices[0, 0].cpu()
    out = []
    for n, i in ((num, idx), (fnum, fidx)):
        m = torch.zeros(i.shape[0], i.shape[1], dtype=torch.bool)
        valid = torch.arange(i.shape[1])[None, :] < n[:, None]
        rows = torch.arange(i.shape[0])[:, None].expand_as(i)
        m[rows[valid], i[valid].long()] = True
        out.append(m)
    return out


@pytest.mark.parametrize("seqlen", [1537, 8192])
@pytest.mark.parametrize("name", names())
def test_compiled_block_mask_and_flex_kernel(name, seqlen):
    from torch.nn.attention.flex_attention import flex_attention

    from lcab.masks.flex import block_mask

    mask = build(mask_config(dict(name=name, **SMALL)), seqlen)
    gpu = block_mask(mask, 128, "cuda")
    cpu = block_mask(mask, 128, "cpu")
    for a, b in zip(_blocks(gpu), _blocks(cpu), strict=True):
        assert torch.equal(a, b)

    torch.manual_seed(0)
    h, d = 2, 64
    q, k, v = (torch.randn(1, h, seqlen, d, device="cuda", dtype=torch.float32) for _ in range(3))
    out = torch.compile(flex_attention)(q, k, v, block_mask=gpu)
    dense = mask.dense("cuda")
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), attn_mask=dense
    )
    err = (out.double() - ref).abs().max().item()
    assert err < 2e-2, f"{name} S={seqlen}: max error {err}"
