"""Numerics check against an fp64 reference on the same inputs.

Rule (as in flash-attention's tests): a kernel passes when its max error vs fp64 is at most
`FWD_FACTOR` (output) / `BWD_FACTOR` (gradients) times the error of the eager reference run
in the kernel's own dtype, floored at one unit of that dtype's precision at the tensor's scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lcab.harness.inputs import StepInputs
from lcab.harness.reference import eager_attention
from lcab.harness.step import grads, run_forward
from lcab.kernels.base import AttnFn

FWD_FACTOR = 2.0
BWD_FACTOR = 3.0
# Reference memory budget per head group: S_q * S_k * heads * 8 bytes for scores and probs.
_REF_BYTES = 2 * 1024**3


@dataclass
class Verdict:
    passed: bool
    errors: dict[str, float] = field(default_factory=dict)  # kernel vs fp64, max abs
    baseline: dict[str, float] = field(default_factory=dict)  # same-dtype eager vs fp64
    ratios: dict[str, float] = field(default_factory=dict)

    def failures(self) -> list[str]:
        return [
            f"{k} error {self.errors[k]:.3g} > {FWD_FACTOR if k == 'out' else BWD_FACTOR:g}x "
            f"same-dtype error {self.baseline[k]:.3g}"
            for k, r in self.ratios.items()
            if not r <= (FWD_FACTOR if k == "out" else BWD_FACTOR)
        ]


def reference(
    inputs: StepInputs, dense: torch.Tensor, dtype: torch.dtype, backward: bool
) -> dict[str, torch.Tensor]:
    """Eager attention in `dtype` on the inputs, computed in head groups to bound memory."""
    q, k, v = (t.detach().to(dtype) for t in inputs.qkv)
    dout = inputs.dout.to(dtype)
    hq, hkv = q.shape[2], k.shape[2]
    per_kv = hq // hkv
    groups = max(1, min(hkv, _REF_BYTES // max(1, dense.numel() * 8 * per_kv * q.shape[0])))
    outs, dqs, dks, dvs = [], [], [], []
    for g0 in range(0, hkv, groups):
        g1 = min(hkv, g0 + groups)
        qg = q[:, :, g0 * per_kv : g1 * per_kv].clone().requires_grad_(backward)
        kg, vg = (t[:, :, g0:g1].clone().requires_grad_(backward) for t in (k, v))
        out, _ = eager_attention(qg, kg, vg, dense)
        outs.append(out.detach())
        if backward:
            dq, dk, dv = torch.autograd.grad(out, (qg, kg, vg), dout[:, :, g0 * per_kv : g1 * per_kv])
            dqs.append(dq)
            dks.append(dk)
            dvs.append(dv)
    res = {"out": torch.cat(outs, 2)}
    if backward:
        res.update(dq=torch.cat(dqs, 2), dk=torch.cat(dks, 2), dv=torch.cat(dvs, 2))
    return res


def kernel_outputs(fn: AttnFn, inputs: StepInputs, backward: bool) -> dict[str, torch.Tensor]:
    out = run_forward(fn, inputs)
    res = {"out": out.detach()}
    if backward:
        dq, dk, dv = grads(out, inputs, retain=False)
        res.update(dq=dq, dk=dk, dv=dv)
    return res


def compare(
    got: dict[str, torch.Tensor],
    ref64: dict[str, torch.Tensor],
    lowp: dict[str, torch.Tensor],
    dtype: torch.dtype,
) -> Verdict:
    v = Verdict(passed=True)
    eps = torch.finfo(dtype).eps
    for name, ref in ref64.items():
        g = got[name].double()
        if not torch.isfinite(g).all():
            v.errors[name], v.baseline[name], v.ratios[name] = float("nan"), 0.0, float("inf")
            continue
        err = (g - ref).abs().max().item()
        base = (lowp[name].double() - ref).abs().max().item()
        floor = eps * ref.abs().max().item()
        v.errors[name], v.baseline[name] = err, base
        v.ratios[name] = err / max(base, floor, torch.finfo(torch.float64).tiny)
    v.passed = not v.failures()
    return v


def against_reference(
    got: dict[str, torch.Tensor], inputs: StepInputs, dense: torch.Tensor, backward: bool
) -> Verdict:
    """Outputs (and gradients) of the global `inputs` judged against the fp64 reference."""
    dtype = inputs.q.dtype
    ref64 = reference(inputs, dense, torch.float64, backward)
    lowp = reference(inputs, dense, dtype, backward) if dtype != torch.float64 else ref64
    return compare(got, ref64, lowp, dtype)


def verify(fn: AttnFn, inputs: StepInputs, dense: torch.Tensor, backward: bool) -> Verdict:
    return against_reference(kernel_outputs(fn, inputs, backward), inputs, dense, backward)
