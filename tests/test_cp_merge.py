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


def test_triton_merge_kernel_equals_the_reference_merge_in_the_interpreter():
    """The GPU merge kernel, run by Triton's CPU interpreter (scripts/merge_check.py, which also
    runs on the GPU): strided row slices, bf16 and fp32 steps, empty rows on either side and on
    both, and four merged key blocks against attention over all keys."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "scripts" / "merge_check.py"
    # TRITON_INTERPRET is read when the kernel is decorated; PYTHONPATH: this checkout's lcab.
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, str(script), "--device", "cpu"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "triton merge ok" in done.stdout
