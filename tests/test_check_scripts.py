"""The GPU check scripts share scripts/_cells.py with lcab's own cell path; run it on the CPU."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from _cells import cell_step

from lcab.kernels.torch_eager import eager_attention


def test_cell_step_runs_the_cells_kernel_on_its_mask():
    cs = cell_step("sdpa", "causal_document", "256", "fwd", shape="small", device="cpu")
    assert cs.mask.name == "causal_document" and cs.mask.seqlen_q == 256
    assert cs.config["kernel"]["name"] == "sdpa" and cs.config["bench"]["device"] == "cpu"
    out = cs.step()
    q, k, v = (t.detach().double() for t in cs.inputs.qkv)
    ref, _ = eager_attention(q, k, v, cs.mask.dense())
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)
