"""torch_ring's autograd function under the harness's bwd timing (issue 16, defect 1).

The harness times a backward alone by calling it again and again on one forward with
retain_graph (lcab.harness.step). TorchCPFn differentiates an inner SDPA graph in its backward;
that inner graph must survive the first backward too. torch's context_parallel itself runs only
on CUDA (test_cp_peers checks the CPU refusal), so the CP context is `enter=nullcontext` here:
the function's own graph handling is what is tested, on CPU, against plain SDPA autograd.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from lcab.cp.strategies.torch_ring import TorchCPFn
from lcab.harness.inputs import make_inputs
from lcab.harness.step import training_step


@pytest.mark.parametrize("causal", [False, True])
def test_backward_timed_repeatedly_on_one_forward(causal):
    inp = make_inputs(1, 64, 64, 4, 4, 16, torch.float32, torch.device("cpu"), 0)

    def fn(q, k, v):
        return TorchCPFn.apply(q, k, v, contextlib.nullcontext, causal, None), None

    step = training_step(fn, inp, "bwd")  # one forward, then backward only, as the harness times it
    got = [step() for _ in range(3)]  # first call, a warmup, a timed call

    ref_in = [t.detach().transpose(1, 2).requires_grad_() for t in inp.qkv]
    ref_out = F.scaled_dot_product_attention(*ref_in, is_causal=causal)
    ref = torch.autograd.grad(ref_out, ref_in, inp.dout.transpose(1, 2))
    for grads in got:
        for g, r in zip(grads, ref, strict=True):
            torch.testing.assert_close(g, r.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_fwd_bwd_frees_the_inner_graph_with_the_outer():
    """fwd_bwd (no retain) still works call after call: each step's inner graph goes with its ctx."""
    inp = make_inputs(1, 32, 32, 2, 2, 8, torch.float32, torch.device("cpu"), 1)

    def fn(q, k, v):
        return TorchCPFn.apply(q, k, v, contextlib.nullcontext, True, None), None

    step = training_step(fn, inp, "fwd_bwd")
    a, b = step(), step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
