"""Flex on one mask with each mask_mod form (lcab.masks.flex.FORMS), timed round-robin.

Same BlockMask, same inputs, same protocol (L2 flush, CUDA events, p50); only the mask_mod
that the kernel evaluates in partial tiles differs. Calls of all forms alternate, so a clock
drift of the GPU hits every form alike.

    python scripts/flex_mask_mod_check.py --cells sliding_window_causal:32k:bwd --forms intervals,slices
"""

from __future__ import annotations

import argparse

import torch
from _cells import cell_step

from lcab.harness.flops import attention_flops, tflops_per_s
from lcab.harness.timing import Schedule, measure_interleaved


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", required=True, help="MASK:SEQLEN:MODE,...")
    ap.add_argument("--forms", default="intervals,slices")
    ap.add_argument("--iters", type=int, default=30)
    a = ap.parse_args()
    forms = a.forms.split(",")
    for spec in a.cells.split(","):
        mask, seqlen, mode = spec.split(":")
        steps = [cell_step("flex", mask, seqlen, mode, mask_mod=f) for f in forms]
        times = measure_interleaved(
            [s.step for s in steps], torch.device("cuda"), Schedule(warmup=5, iters=a.iters), 256
        )
        shape = steps[0].config["shape"]
        flops = attention_flops(steps[0].mask.area, shape["heads_q"], shape["head_dim"], shape["batch"], mode)
        line = [f"flex {mask:22s} S={seqlen:>4s} {mode}:"]
        for f, s, t in zip(forms, steps, times, strict=True):
            assert s.notes["mask_mod"] == f, s.notes
            line.append(
                f"{f} p50 {t.p50:8.3f} ms {tflops_per_s(flops, t.p50 / 1e3):6.1f} TFLOPs/s (spread {t.spread:.3f})"
            )
        print("  ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
