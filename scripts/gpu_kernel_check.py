#!/usr/bin/env python
"""Numerics check of the GPU kernel adapters (flex, cudnn, flash2, flash3) on one CUDA device.

For each available kernel and each mask (default: causal_document, sliding_window_causal, full
at S=4096, heads 64:8:8, d128, bf16): forward + backward through the adapter, compared with an
fp32 reference computed from mask.dense(); prints one line per kernel x mask with the relative
errors ||x - ref|| / ||ref|| of out, lse, dq, dk, dv and the status. A failing cell prints its
error and the next cell runs. The first line per mask is a bf16 eager reference, the error a
same-precision implementation makes, to judge the kernels' errors against.

    python scripts/gpu_kernel_check.py
    python scripts/gpu_kernel_check.py --kernels cudnn --masks causal_document --seqlen 16384
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lcab import kernels
from lcab.config import mask_config
from lcab.kernels.base import ShapeSpec, Unavailable, Unsupported
from lcab.masks import build

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def reference(q, k, v, dout, dense, compute_dtype=torch.float32):
    """Eager masked attention per KV-head group (bounded memory), in compute_dtype: out, lse, grads."""
    hq, hkv = q.shape[2], k.shape[2]
    rep = hq // hkv
    outs, lses, dqs, dks, dvs = [], [], [], [], []
    for g in range(hkv):
        qg = q[:, :, g * rep : (g + 1) * rep].detach().to(compute_dtype).requires_grad_()
        kg = k[:, :, g : g + 1].detach().to(compute_dtype).requires_grad_()
        vg = v[:, :, g : g + 1].detach().to(compute_dtype).requires_grad_()
        s = torch.einsum("bqhd,bkd->bhqk", qg, kg[:, :, 0]) * q.shape[-1] ** -0.5
        s = s.to(torch.promote_types(compute_dtype, torch.float32)).masked_fill(~dense, float("-inf"))
        lse = torch.logsumexp(s, -1)
        p = torch.softmax(s, -1).to(compute_dtype)
        out = torch.einsum("bhqk,bkd->bqhd", p, vg[:, :, 0])
        dq, dk, dv = torch.autograd.grad(
            out, (qg, kg, vg), dout[:, :, g * rep : (g + 1) * rep].to(compute_dtype)
        )
        outs.append(out.detach())
        lses.append(lse.detach())
        dqs.append(dq)
        dks.append(dk)
        dvs.append(dv)
        del s, p
    cat = torch.cat
    return cat(outs, 2), cat(lses, 1), cat(dqs, 2), cat(dks, 2), cat(dvs, 2)


def rel(x, ref) -> float:
    if x is None:
        return float("nan")
    x, ref = x.detach().double(), ref.double()
    finite = torch.isfinite(ref)  # rows with no visible key have lse -inf
    return float((x[finite] - ref[finite]).norm() / ref[finite].norm().clamp_min(1e-30))


def time_ms(fn, iters: int) -> float:
    for _ in range(2):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def fmt(errs: dict) -> str:
    return " ".join(f"{k}={v:.2e}" for k, v in errs.items())


NAMES = ("out", "lse", "dq", "dk", "dv")


def make_inputs(shape: ShapeSpec, seqlen: int):
    g = torch.Generator(device=shape.device).manual_seed(0)

    def one(heads):
        size = (shape.batch, seqlen, heads, shape.head_dim)
        return torch.randn(size, device=shape.device, dtype=shape.dtype, generator=g)

    return one(shape.heads_q), one(shape.heads_kv), one(shape.heads_kv), one(shape.heads_q)


def check_cell(kernel_name, mask, shape, tensors, ref, base_errs, args) -> dict:
    """One kernel x mask: prepare, fwd + bwd, errors against ref, optional timing; prints its line."""
    q, k, v, dout = tensors
    row: dict = {}
    kernel = kernels.create(kernel_name, {"block_size": args.block_size, "compile": not args.no_compile})
    ok, why = kernel.available(shape.device)
    if not ok:
        raise Unavailable(why)
    t0 = time.perf_counter()
    fn = kernel.prepare(mask, shape)
    qq, kk, vv = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out, lse = fn(qq, kk, vv)
    dq, dk, dv = torch.autograd.grad(out, (qq, kk, vv), dout)
    torch.cuda.synchronize()
    row["first_call_s"] = round(time.perf_counter() - t0, 2)
    if ref is None:
        errs, ratio = dict.fromkeys(NAMES, float("nan")), float("nan")
        row["status"] = "ran"
    else:
        errs = {n: rel(x, r) for n, x, r in zip(NAMES, (out, lse, dq, dk, dv), ref, strict=True)}
        ratio = max(errs[n] / max(base_errs[n], 1e-12) for n in ("out", "dq", "dk", "dv"))
        row["status"] = "ok" if ratio < 5 and errs["lse"] < 1e-3 else "CHECK"
    row.update(errs)
    row["max_ratio"] = ratio
    extra = ""
    if args.iters:
        fwd = time_ms(lambda: fn(qq, kk, vv), args.iters)
        o2, _ = fn(qq, kk, vv)
        bwd = time_ms(lambda: torch.autograd.grad(o2, (qq, kk, vv), dout, retain_graph=True), args.iters)
        tf = 4 * mask.area * shape.heads_q * shape.head_dim * shape.batch / 1e12
        row.update(fwd_ms=fwd, bwd_ms=bwd, fwd_tflops=tf / (fwd / 1e3), bwd_tflops=2.5 * tf / (bwd / 1e3))
        extra = (
            f" fwd={fwd:.3f}ms ({row['fwd_tflops']:.0f} TF/s) bwd={bwd:.3f}ms ({row['bwd_tflops']:.0f} TF/s)"
        )
    row["notes"] = dict(getattr(fn, "notes", {}))
    print(
        f"{kernel_name:8s} {mask.name:22s} {row['status']:12s} {fmt(errs)} max_ratio={ratio:.2f}"
        f"{extra} first={row['first_call_s']}s {row['notes']}"
    )
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", default="flex,cudnn,flash2,flash3")
    ap.add_argument("--masks", default="causal_document,sliding_window_causal,full")
    ap.add_argument("--seqlen", type=int, default=4096)
    ap.add_argument("--heads", default="64:8", help="heads_q:heads_kv")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--block-size", type=int, default=128, help="flex BlockMask block")
    ap.add_argument("--no-compile", action="store_true", help="flex uncompiled (slow reference path)")
    ap.add_argument("--iters", type=int, default=10, help="timed calls (0: no timing)")
    ap.add_argument("--json", default="", help="also write the rows to this JSON file")
    ap.add_argument("--no-ref", action="store_true", help="skip the reference (long S): timing only")
    args = ap.parse_args()

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    device = torch.device("cuda")
    hq, hkv = (int(x) for x in args.heads.split(":"))
    dtype = DTYPES[args.dtype]
    shape = ShapeSpec(args.batch, hq, hkv, args.head_dim, dtype, device)
    print(
        f"# {torch.cuda.get_device_name()} torch {torch.__version__} S={args.seqlen} "
        f"{hq}:{hkv}:{hkv} d{args.head_dim} {args.dtype} batch {args.batch}"
    )
    rows = []
    for mask_name in args.masks.split(","):
        try:
            mask = build(mask_config(dict(name=mask_name, window=args.window)), args.seqlen)
            q, k, v, dout = make_inputs(shape, args.seqlen)
            if args.no_ref:
                ref, base_errs = None, dict.fromkeys(NAMES, float("nan"))
            else:
                dense = mask.dense(device)
                ref = reference(q, k, v, dout, dense)
                same = reference(q, k, v, dout, dense, compute_dtype=dtype)
                base_errs = {n: rel(x, r) for n, x, r in zip(NAMES, same, ref, strict=True)}
                del same, dense
            docs = f" docs={len(mask.doc_lens)}" if mask.doc_lens else ""
            print(f"{'ref_' + args.dtype:8s} {mask_name:22s} {'baseline':12s} {fmt(base_errs)}{docs}")
            rows.append({"kernel": f"ref_{args.dtype}", "mask": mask_name, "status": "baseline", **base_errs})
        except Exception as e:
            print(f"{'-':8s} {mask_name:22s} {'error':12s} reference failed: {type(e).__name__}: {e}")
            continue
        for kernel_name in args.kernels.split(","):
            row = {"kernel": kernel_name, "mask": mask_name}
            try:
                row.update(check_cell(kernel_name, mask, shape, (q, k, v, dout), ref, base_errs, args))
            except Unavailable as e:
                row.update(status="unavailable", reason=str(e))
                print(f"{kernel_name:8s} {mask_name:22s} {'unavailable':12s} {e}")
            except Unsupported as e:
                row.update(status="unsupported", reason=str(e))
                print(f"{kernel_name:8s} {mask_name:22s} {'unsupported':12s} {e}")
            except Exception as e:
                row.update(status="error", reason=f"{type(e).__name__}: {e}")
                print(f"{kernel_name:8s} {mask_name:22s} {'error':12s} {type(e).__name__}: {e}")
                traceback.print_exc(limit=4, file=sys.stdout)
            rows.append(row)
            torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
