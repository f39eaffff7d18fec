"""`torch`: eager QK^T -> masked softmax -> PV with a dense boolean mask (lcab's reference)."""

from __future__ import annotations

from lcab.kernels.base import AttnFn, Capabilities, Kernel, ShapeSpec, StepFns
from lcab.kernels.torch_eager import eager_attention, eager_step_fns
from lcab.masks.slices import AttnMask


class TorchEager(Kernel):
    name = "torch"
    summary = "eager matmul + masked softmax (dense boolean mask); any mask"
    capabilities = Capabilities(
        devices=("cpu", "cuda"),
        dtypes=("bf16", "fp16", "fp32", "fp64"),
        mask_forms=("dense",),
        backward=True,
        steps=("cpu", "cuda"),  # the exact eager formula
    )
    packages = ("torch",)

    def prepare(self, mask: AttnMask, shape: ShapeSpec) -> AttnFn:
        dense = mask.dense(shape.device)

        def fn(q, k, v):
            return eager_attention(q, k, v, dense)

        fn.notes = {"mask_form": "dense"}  # every (q, k) pair is computed, masked or not
        return fn

    def working_set(self, mask: AttnMask, shape: ShapeSpec, mode: str) -> int:
        from lcab.harness import memory

        return memory.materialised(mask, shape, mode, memory.EAGER)

    def step_fns(self, mask: AttnMask, shape: ShapeSpec) -> StepFns:
        return eager_step_fns(mask, shape)
