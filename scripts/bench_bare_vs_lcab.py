"""lcab's measured TFLOPs/s beside a bare event-timed loop of the same library call.

For each kernel at the given masks and seqlen, runs the cell through lcab's real path
(compose -> plan -> execute: L2 flush, events, p50) and then times the library call itself
in a plain loop in the same process (events around each call, median). A ratio near 1 says
the harness adds nothing to what it measures.

    python scripts/bench_bare_vs_lcab.py --kernels sdpa_cudnn,sdpa_flash,flex --masks full,causal --seqlen 16k
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

from lcab import kernels
from lcab.compose import compose_config
from lcab.harness.flops import attention_flops
from lcab.harness.inputs import make_inputs
from lcab.harness.shape import shape_spec
from lcab.pipeline import execute
from lcab.pipeline.prepare import cell_mask
from lcab.plan import plan_cell

SDPA = {
    "sdpa_cudnn": "CUDNN_ATTENTION",
    "sdpa_flash": "FLASH_ATTENTION",
    "sdpa_efficient": "EFFICIENT_ATTENTION",
    "sdpa_math": "MATH",
}


def bare_call(kernel: str, cell, mask):
    """The library call as a user would write it, on BHSD-contiguous tensors."""
    spec = shape_spec(cell.config, torch.device("cuda"))
    s = mask.seqlen_q
    inp = make_inputs(
        spec.batch, s, s, spec.heads_q, spec.heads_kv, spec.head_dim, spec.dtype, spec.device, 0
    )
    q, k, v = (t.detach().transpose(1, 2).contiguous().requires_grad_(True) for t in inp.qkv)
    dout = inp.dout.transpose(1, 2).contiguous()
    causal = mask.name == "causal"
    if kernel in SDPA:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, SDPA[kernel])
        # Same GQA handling as the adapter found for this backend (some take no enable_gqa).
        native = kernels.create(kernel).prepare(mask, spec).notes["gqa"] == "native"

        def fwd():
            kk, vv = (k, v) if native else (t.repeat_interleave(q.shape[1] // k.shape[1], 1) for t in (k, v))
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, kk, vv, is_causal=causal, enable_gqa=native)

    elif kernel == "flex":
        from torch.nn.attention.flex_attention import flex_attention

        from lcab.masks.flex import block_mask

        bm = block_mask(mask, 128, spec.device)
        compiled = torch.compile(flex_attention, dynamic=False)

        def fwd():
            return compiled(q, k, v, block_mask=bm, enable_gqa=True)

    else:
        # Kernels without a one-line public call: the adapter's own callable in a bare loop,
        # on lcab's own [B, S, H, D] tensors (the layout the adapter is written for).
        fn = kernels.create(kernel).prepare(mask, spec)
        qkv = tuple(t.detach().requires_grad_(True) for t in inp.qkv)

        def fwd():
            return fn(*qkv)[0]

        return fwd, qkv, inp.dout

    return fwd, (q, k, v), dout


def time_bare(fwd, qkv, dout, mode: str, iters: int) -> float:
    if mode == "fwd":
        call = fwd
    else:
        out = fwd()

        def call():
            return torch.autograd.grad(out, qkv, dout, retain_graph=True)

    for _ in range(5):
        call()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for a, b in zip(starts, ends):
        a.record()
        call()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in zip(starts, ends))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", default="sdpa_cudnn,sdpa_flash,sdpa_efficient,flex,cudnn,flash2,flash3")
    ap.add_argument("--masks", default="full,causal")
    ap.add_argument("--seqlen", default="16k")
    ap.add_argument("--modes", default="fwd,bwd")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--store", default="outputs/bare_vs_lcab.jsonl")
    ap.add_argument("--extra", nargs="*", default=[])
    args = ap.parse_args()
    lines = []
    from lcab.results.store import ResultStore

    store = ResultStore(args.store)
    for kernel in args.kernels.split(","):
        for mask_name in args.masks.split(","):
            for mode in args.modes.split(","):
                point = [
                    f"kernel={kernel}",
                    f"mask={mask_name}",
                    f"seqlen={args.seqlen}",
                    f"bench.mode={mode}",
                ]
                cfg = compose_config([*point, f"bench.iters={args.iters}", *args.extra])
                cell = plan_cell(cfg)
                res = execute(cell)
                store.append(res)
                row = {"kernel": kernel, "mask": mask_name, "mode": mode, "status": res.status}
                if res.status != "ok":
                    row["reason"] = res.reason
                    lines.append(row)
                    print(json.dumps(row), flush=True)
                    continue
                mask = cell_mask(cell.config)
                try:
                    fwd, qkv, dout = bare_call(kernel, cell, mask)
                    bare_ms = time_bare(fwd, qkv, dout, mode, args.iters)
                except Exception as exc:
                    row.update(status="bare_error", reason=f"{type(exc).__name__}: {exc}"[:200])
                    lines.append(row)
                    print(json.dumps(row), flush=True)
                    continue
                s = cell.config["shape"]
                flops = attention_flops(mask.area, s["heads_q"], s["head_dim"], s["batch"], mode)
                row.update(
                    lcab_tflops=round(res.metrics["tflops"], 1),
                    bare_tflops=round(flops / (bare_ms / 1e3) / 1e12, 1),
                    lcab_ms=round(res.metrics["time_ms_p50"], 3),
                    bare_ms=round(bare_ms, 3),
                    spread=round(res.metrics["time_spread"], 4),
                )
                row["ratio"] = round(row["lcab_tflops"] / row["bare_tflops"], 3)
                lines.append(row)
                print(json.dumps(row), flush=True)
                del fwd, qkv, dout
                torch.cuda.empty_cache()
    print(f"\n{'kernel':<15}{'mask':<24}{'mode':<6}{'lcab':>8}{'bare':>8}{'ratio':>7}  status")
    for r in lines:
        if r["status"] == "ok":
            print(
                f"{r['kernel']:<15}{r['mask']:<24}{r['mode']:<6}{r['lcab_tflops']:>8}{r['bare_tflops']:>8}"
                f"{r['ratio']:>7}  ok"
            )
        else:
            print(
                f"{r['kernel']:<15}{r['mask']:<24}{r['mode']:<6}{'':>8}{'':>8}{'':>7}  {r['status']}: {r['reason']}"
            )


if __name__ == "__main__":
    main()
