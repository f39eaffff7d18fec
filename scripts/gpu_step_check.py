"""Check every kernel's CP step functions (fwd with LSE, bwd given global out/lse) on CUDA
against lcab's exact eager step formula, on square and non-square step masks.

    python scripts/gpu_step_check.py --kernels sdpa_flash,sdpa_cudnn,sdpa_efficient
"""

from __future__ import annotations

import argparse
import traceback

import torch

from lcab.kernels import base as kernels
from lcab.kernels.base import ShapeSpec, Unsupported
from lcab.kernels.torch_eager import eager_step_fns
from lcab.masks.slices import AttnMask, Slice


def step_masks() -> dict[str, AttnMask]:
    return {
        "full_sq": AttnMask((Slice(0, 1024, 0, 1024, "full"),), 1024, 1024, name="full"),
        "causal_sq": AttnMask((Slice(0, 1024, 0, 1024, "causal"),), 1024, 1024, name="causal"),
        "full_rect": AttnMask((Slice(0, 1000, 0, 1500, "full"),), 1000, 1500, name="full"),
        "docs_odd": AttnMask(
            (Slice(0, 300, 0, 300, "causal"), Slice(300, 1001, 300, 1001, "causal")), 1001, 1001, name="docs"
        ),
    }


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    fin = torch.isfinite(b)
    return ((a[fin] - b[fin]).norm() / b[fin].norm().clamp_min(1e-30)).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", default="sdpa_flash,sdpa_cudnn,sdpa_efficient,sdpa,torch")
    args = ap.parse_args()
    dev = torch.device("cuda")
    spec = ShapeSpec(1, 16, 4, 128, torch.bfloat16, dev)
    for name in args.kernels.split(","):
        for mname, mask in step_masks().items():
            tag = f"{name:<15}{mname:<10}"
            try:
                fns = kernels.get(name).step_fns(mask, spec)
                ref = eager_step_fns(mask, ShapeSpec(1, 16, 4, 128, torch.float32, dev))
                g = torch.Generator(device="cpu").manual_seed(0)

                def r(s, h, g=g):
                    return torch.randn(1, s, h, 128, generator=g).to(dev, torch.bfloat16)

                q, k, v, do = (
                    r(mask.seqlen_q, 16),
                    r(mask.seqlen_k, 4),
                    r(mask.seqlen_k, 4),
                    r(mask.seqlen_q, 16),
                )
                out, lse = fns.fwd(q, k, v)
                rout, rlse = ref.fwd(q.float(), k.float(), v.float())
                dq, dk, dv = fns.bwd(do, q, k, v, out, lse)
                rdq, rdk, rdv = ref.bwd(do.float(), q.float(), k.float(), v.float(), rout, rlse)
                errs = [rel(out, rout), rel(lse, rlse), rel(dq, rdq), rel(dk, rdk), rel(dv, rdv)]
                ok = all(e < 2e-2 for e in errs)
                print(
                    f"{tag}{'ok ' if ok else 'BAD'} form={fns.form} out/lse/dq/dk/dv rel err "
                    + " ".join(f"{e:.1e}" for e in errs),
                    flush=True,
                )
            except Unsupported as exc:
                print(f"{tag}unsupported: {exc}", flush=True)
            except Exception as exc:
                print(f"{tag}ERROR {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc(limit=-3)


if __name__ == "__main__":
    main()
