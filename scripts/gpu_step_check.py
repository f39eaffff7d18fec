"""Check kernels' CP step functions (fwd with LSE, bwd given a global out/lse) on CUDA against
lcab's exact eager step formula in fp32, on square, rectangular and block-diagonal step masks.

    python scripts/gpu_step_check.py                       # every kernel below, ~1 min on an H100
    python scripts/gpu_step_check.py --kernels cudnn

One line per (kernel, mask): max abs / norm-relative errors of out, lse, dq, dk, dv and PASS,
FAIL, SKIP (the kernel refuses a mask it is not required to take) or ERROR. The backward gets a
foreign out and lse (the step's own plus noise), as a ring step gets the merged ones, so a
kernel that recomputes its own softmax normaliser fails. Exits 1 on any FAIL or ERROR.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch

from lcab import kernels
from lcab.config import DocMaskConfig, WindowMaskConfig
from lcab.cp.sharding import doc_zigzag
from lcab.cp.submask import submask
from lcab.kernels.base import ShapeSpec, Unavailable, Unsupported
from lcab.kernels.torch_eager import eager_step_fns
from lcab.masks import build
from lcab.masks.slices import AttnMask, Slice

REL_TOL = 2e-2  # norm-relative, bf16 inputs against an fp32 reference
LSE_TOL = 2e-2  # max abs, natural-log units


def step_masks() -> dict[str, AttnMask]:
    """Step masks in local coordinates; lengths deliberately not multiples of 64."""
    masks = {
        "full_sq": AttnMask((Slice(0, 1024, 0, 1024, "full"),), 1024, 1024, name="full"),
        "causal_sq": AttnMask((Slice(0, 1024, 0, 1024, "causal"),), 1024, 1024, name="causal"),
        "full_rect": AttnMask((Slice(0, 1000, 0, 1500, "full"),), 1000, 1500, name="full"),
        # lcab's causal slice is bottom-right aligned (all-gathered keys against a chunk).
        "causal_rect": AttnMask((Slice(0, 700, 0, 1500, "causal"),), 700, 1500, name="causal"),
        "docs_odd": AttnMask(
            (Slice(0, 300, 0, 300, "causal"), Slice(300, 1001, 300, 1001, "causal")), 1001, 1001, name="docs"
        ),
        # Block-diagonal pieces of unequal q/k length and offset, with rows and keys in no block.
        "docs_full": AttnMask(
            (Slice(0, 200, 0, 90), Slice(230, 700, 90, 600), Slice(700, 960, 650, 1003)),
            960,
            1003,
            name="docs",
        ),
        "docs_causal": AttnMask(
            (
                Slice(0, 250, 0, 250, "causal"),
                Slice(300, 777, 260, 737, "causal"),
                Slice(800, 900, 737, 837, "causal"),
            ),
            900,
            837,
            name="docs",
        ),
        "mixed": AttnMask(
            (Slice(0, 256, 0, 256, "causal"), Slice(256, 512, 256, 700)), 512, 700, name="mixed"
        ),
    }
    # Sliding-window steps: the diagonal band, and the triangle an earlier chunk leaves (left bound
    # only); not required of any kernel, but a kernel that takes them must get them right.
    masks["swa_sq"] = build(WindowMaskConfig(name="sliding_window_causal", window=128), 1024)
    masks["swa_tri"] = AttnMask((Slice(0, 127, 0, 127, "inv_causal"),), 127, 127, name="swa_tri")
    # Real ring steps of causal_document under doc_zigzag on 2 ranks: diagonal steps are square
    # causal pieces, off-diagonal ones full pieces whose q and k halves differ.
    doc = build(DocMaskConfig(name="causal_document", seed=0), 2048)
    sh = doc_zigzag(doc, 2)
    for r, t in ((0, 0), (0, 1), (1, 0)):
        masks[f"cpdoc_r{r}k{t}"] = submask(doc, sh.runs(r), sh.runs(t)).mask
    return masks


# What each kernel must take (anything else it refuses is SKIP); "mixed" must be refused by cudnn.
REQUIRED = {
    "cudnn": {"full_sq", "causal_sq", "full_rect", "causal_rect", "docs_odd", "docs_full", "docs_causal"}
    | {"cpdoc_r0k0", "cpdoc_r0k1", "cpdoc_r1k0"},
}
MUST_REFUSE = {"cudnn": {"mixed"}}


def errs(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max abs, norm-relative) over the reference's finite entries."""
    a, b = a.float(), b.float()
    fin = torch.isfinite(b)
    if not fin.any():
        return 0.0, 0.0
    d = a[fin] - b[fin]
    return d.abs().max().item(), (d.norm() / b[fin].norm().clamp_min(1e-30)).item()


def check(fns, mask: AttnMask, spec: ShapeSpec, ref_spec: ShapeSpec) -> tuple[bool, str]:
    dev, b, hq, hkv, d = spec.device, spec.batch, spec.heads_q, spec.heads_kv, spec.head_dim
    ref = eager_step_fns(mask, ref_spec)
    g = torch.Generator(device="cpu").manual_seed(0)

    def r(s, h):
        return torch.randn(b, s, h, d, generator=g).to(dev, spec.dtype)

    q, k, v, do = r(mask.seqlen_q, hq), r(mask.seqlen_k, hkv), r(mask.seqlen_k, hkv), r(mask.seqlen_q, hq)
    out, lse = fns.fwd(q, k, v)
    rout, rlse = ref.fwd(q.float(), k.float(), v.float())
    # A global out / lse as the ring hands it to the backward: larger normaliser, other output.
    fin = torch.isfinite(rlse)
    glse = torch.where(fin, rlse + 0.5 * torch.rand(rlse.shape, generator=g).to(dev), rlse)
    gout = (rout + 0.5 * torch.randn(rout.shape, generator=g).to(dev)).to(spec.dtype)
    dq, dk, dv = fns.bwd(do, q, k, v, gout, glse)
    rdq, rdk, rdv = ref.bwd(do.float(), q.float(), k.float(), v.float(), gout.float(), glse)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    dense = mask.dense(dev)
    empty, unseen = ~dense.any(1), ~dense.any(0)
    exact = {
        "shape/dtype": out.shape == q.shape
        and out.dtype == q.dtype
        and lse.shape == (b, hq, mask.seqlen_q)
        and lse.dtype == torch.float32
        and (dq.shape, dk.shape, dv.shape) == (q.shape, k.shape, v.shape),
        "lse_inf_pattern": torch.equal(torch.isfinite(lse), fin),
        "empty_rows_zero": bool((out[:, empty] == 0).all() and (dq[:, empty] == 0).all()),
        "unseen_keys_zero": bool((dk[:, unseen] == 0).all() and (dv[:, unseen] == 0).all()),
    }
    e = {
        "out": errs(out, rout),
        "lse": errs(lse, rlse),
        "dq": errs(dq, rdq),
        "dk": errs(dk, rdk),
        "dv": errs(dv, rdv),
    }
    ok = all(exact.values()) and e["lse"][0] < LSE_TOL
    ok = ok and all(rel < REL_TOL for name, (_, rel) in e.items() if name != "lse")
    bad = [k for k, v in exact.items() if not v]
    text = " ".join(f"{n}={m:.1e}/{rel:.1e}" for n, (m, rel) in e.items())
    return ok, f"max/rel {text}" + (f" FAILED {','.join(bad)}" if bad else "")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", default="cudnn,sdpa_flash,sdpa_cudnn,sdpa_efficient,sdpa,torch")
    ap.add_argument("--heads", default="8:2", help="q:kv heads (GQA)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cuda", help="cpu only dry-runs the script (kernel torch)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    hq, hkv = (int(x) for x in args.heads.split(":"))
    spec = ShapeSpec(args.batch, hq, hkv, 128, torch.bfloat16, dev)
    ref_spec = ShapeSpec(args.batch, hq, hkv, 128, torch.float32, dev)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"{where}  torch {torch.__version__}  B={args.batch} H={hq}:{hkv} d128 bf16", flush=True)
    failures = 0
    masks = step_masks()
    for name in args.kernels.split(","):
        kernel = kernels.create(name)
        for mname, mask in masks.items():
            tag = f"{name:<15}{mname:<12}{mask.seqlen_q:>5}x{mask.seqlen_k:<5}"
            t0 = time.perf_counter()
            try:
                fns = kernel.step_fns(mask, spec)
            except (Unsupported, Unavailable) as exc:
                required = mname in REQUIRED.get(name, set())
                refused_ok = mname in MUST_REFUSE.get(name, set()) and isinstance(exc, Unsupported)
                verdict = "PASS" if refused_ok else ("FAIL" if required else "SKIP")
                failures += verdict == "FAIL"
                print(f"{tag}{verdict} refused: {exc}", flush=True)
                continue
            except Exception as exc:
                failures += 1
                print(f"{tag}ERROR building step fns: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc(limit=-3)
                continue
            if mname in MUST_REFUSE.get(name, set()):
                failures += 1
                print(f"{tag}FAIL accepted a mask it must refuse (form={fns.form})", flush=True)
                continue
            try:
                ok, text = check(fns, mask, spec, ref_spec)
            except Exception as exc:
                failures += 1
                print(f"{tag}ERROR {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc(limit=-3)
                continue
            failures += not ok
            dt = time.perf_counter() - t0
            print(f"{tag}{'PASS' if ok else 'FAIL'} {text} form={fns.form} ({dt:.1f}s)", flush=True)
    print(f"{'all passed' if failures == 0 else f'{failures} failed'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
