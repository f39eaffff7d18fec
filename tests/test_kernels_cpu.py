"""Every CPU kernel matches the fp64 reference on every mask it claims, fwd and bwd."""

from __future__ import annotations

import pytest
import torch

from lcab import kernels
from lcab.config import mask_config
from lcab.harness.inputs import make_inputs
from lcab.harness.verify import verify
from lcab.kernels.base import ShapeSpec, Unsupported
from lcab.masks import build, names

# Small odd sizes with windows/blocks scaled down so every pattern has real structure.
MASK_PARAMS = {"window": 24, "block": 16, "sparse_block": 16, "density": 0.4, "max_blocks_per_doc": 3}
CPU = torch.device("cpu")


def mask_for(name: str, seqlen: int):
    return build(mask_config(dict(name=name, seed=3, **MASK_PARAMS)), seqlen)


def check(kernel_name: str, mask_name: str, seqlen: int, dtype: torch.dtype, heads=(4, 2), d=16):
    kernel = kernels.create(kernel_name)
    mask = mask_for(mask_name, seqlen)
    spec = ShapeSpec(batch=2, heads_q=heads[0], heads_kv=heads[1], head_dim=d, dtype=dtype, device=CPU)
    fn = kernel.prepare(mask, spec)
    inputs = make_inputs(2, seqlen, seqlen, heads[0], heads[1], d, dtype, CPU, seed=seqlen)
    verdict = verify(fn, inputs, mask.dense(), backward=kernel.capabilities.backward)
    assert verdict.passed, (kernel_name, mask_name, verdict.failures())
    return verdict


@pytest.mark.parametrize("mask_name", names())
@pytest.mark.parametrize("kernel_name", ["torch", "sdpa_math", "sdpa"])
def test_dense_mask_kernels_match_reference(kernel_name, mask_name):
    check(kernel_name, mask_name, 97, torch.float32)


@pytest.mark.parametrize("mask_name", ["full", "causal"])
def test_sdpa_flash_cpu_full_and_causal(mask_name):
    check("sdpa_flash", mask_name, 130, torch.float32)
    check("sdpa_flash", mask_name, 64, torch.bfloat16)


@pytest.mark.parametrize("mask_name", ["causal_document", "share_question", "sliding_window_causal"])
def test_sdpa_flash_refuses_other_masks(mask_name):
    spec = ShapeSpec(1, 4, 2, 16, torch.float32, CPU)
    with pytest.raises(Unsupported, match="sdpa_flash cannot express"):
        kernels.create("sdpa_flash").prepare(mask_for(mask_name, 64), spec)


def test_bf16_kernel_judged_against_bf16_reference():
    verdict = check("sdpa_math", "causal_document", 128, torch.bfloat16)
    # bf16 errors are orders above fp32's: the rule scales with the dtype, not a fixed atol.
    assert verdict.baseline["out"] > 1e-4


def test_verify_catches_a_wrong_kernel():
    """A kernel that silently computes another mask (causal instead of causal_document) fails."""
    mask = mask_for("causal_document", 96)
    wrong = kernels.create("torch").prepare(
        mask_for("causal", 96), ShapeSpec(1, 4, 2, 16, torch.float32, CPU)
    )
    inputs = make_inputs(1, 96, 96, 4, 2, 16, torch.float32, CPU, seed=1)
    verdict = verify(wrong, inputs, mask.dense(), backward=True)
    assert not verdict.passed
    assert verdict.ratios["out"] > 1e3
