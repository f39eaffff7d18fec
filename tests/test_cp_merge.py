"""The fp32 LSE merge equals attention over the union of key sets, whatever the tile order."""

import pytest
import torch

from lcab.cp.merge import LseAccumulator
from lcab.kernels.torch_eager import eager_attention


@pytest.mark.parametrize("order", ["whole_first", "partial_first"])
def test_merge_of_key_blocks_equals_full_attention(order):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 12, 2, 8, generator=g, dtype=torch.float64) for _ in range(3))
    ref, ref_lse = eager_attention(q, k, v, None)
    # Key blocks [0, 5) and [5, 12); rows [0, 6) get block 2 as a separate row-range tile.
    parts = [
        (0, 12, 0, 5),
        (0, 6, 5, 12),
        (6, 12, 5, 12),
    ]
    if order == "partial_first":
        parts = parts[1:] + parts[:1]
    acc = LseAccumulator(q)
    for q0, q1, k0, k1 in parts:
        o, lse = eager_attention(q[:, q0:q1], k[:, k0:k1], v[:, k0:k1], None)
        acc.add(o, lse, q0, q1)
    # eager_attention returns an fp32 LSE, so the merge weights carry fp32 rounding.
    torch.testing.assert_close(acc.out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(acc.lse, ref_lse.double(), rtol=1e-6, atol=1e-6)


_TRITON_CHECK = r"""
import torch
from lcab.cp.merge import _merge
from lcab.cp.merge_triton import merge_rows

g = torch.Generator().manual_seed(1)
B, S, H, D = 2, 9, 6, 24  # D and H not powers of two: masked lanes
for step_dtype in (torch.bfloat16, torch.float32):
    acc_o = torch.randn(B, S, H, D, generator=g)
    acc_l = torch.randn(B, H, S, generator=g) * 3
    out = torch.randn(B, 5, H, D, generator=g).to(step_dtype)
    lse = torch.randn(B, H, 5, generator=g) * 3
    acc_l[0, 1, 2] = float("-inf")       # accumulator row empty so far
    lse[1, 2, 0] = float("-inf")         # step row empty
    acc_l[0, 3, 4] = float("-inf")       # both empty (rows 2..7 of the slice: row 4 is step row 2)
    lse[0, 3, 2] = float("-inf")
    ref_o, ref_l = acc_o.clone(), acc_l.clone()
    _merge(ref_o[:, 2:7], ref_l[:, :, 2:7], out, lse)
    merge_rows(acc_o[:, 2:7], acc_l[:, :, 2:7], out, lse)  # strided row slices, in place
    torch.testing.assert_close(acc_o, ref_o, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(acc_l, ref_l, rtol=1e-6, atol=1e-6)
    assert torch.isneginf(acc_l[0, 3, 4]) and acc_o[0, 4, 3].abs().max() == 0
print("triton merge ok")
"""


def test_triton_merge_kernel_equals_the_reference_merge_in_the_interpreter():
    """The GPU merge kernel, run by Triton's CPU interpreter, against the eager fp32 merge:
    strided row slices, bf16 and fp32 steps, empty rows on either side and on both."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}  # read when the kernel is decorated
    done = subprocess.run([sys.executable, "-c", _TRITON_CHECK], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "triton merge ok" in done.stdout
