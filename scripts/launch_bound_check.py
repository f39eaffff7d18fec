"""Is a small cell timed by its GPU work or by the CPU launching it?

A timed call is bracketed by CUDA events recorded right after the L2 flush is queued. If the
host needs longer to launch the call (Python, guards, wrappers) than the flush keeps the GPU
busy, the GPU idles inside the bracket and the cell measures the launch, not the kernel.
For each cell this prints, through lcab's own path (plan -> mask -> prepare -> step):

    cpu_ms   host time per call, calls queued back to back without synchronizing
    gpu_ms   GPU time per call, back to back (no flush: the GPU never waits for the host)
    p50_ms   lcab's protocol (L2 flush + events around each call)

    python scripts/launch_bound_check.py --kernel flex --cells full:2k:fwd,share_question:2k:fwd
"""

from __future__ import annotations

import argparse
import time

import torch
from _cells import cell_step

from lcab.harness.timing import Schedule, measure


def check(kernel_name: str, mask_name: str, seqlen: str, mode: str, calls: int) -> str:
    device = torch.device("cuda")
    step = cell_step(kernel_name, mask_name, seqlen, mode).step
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        step()
    cpu_ms = (time.perf_counter() - t0) * 1e3 / calls
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        step()
    end.record()
    torch.cuda.synchronize()
    gpu_ms = start.elapsed_time(end) / calls
    p50 = measure(step, device, Schedule(warmup=3, iters=calls), 256).p50
    # Back to back, the GPU waits for the host whenever the host is the slower side.
    bound = "launch-bound" if cpu_ms >= 0.9 * gpu_ms else "gpu-bound"
    return (
        f"{kernel_name} {mask_name:16s} S={seqlen:>4s} {mode}: cpu {cpu_ms:7.3f} ms/call  gpu {gpu_ms:7.3f}"
        f" ms/call  protocol p50 {p50:7.3f} ms  -> {bound}"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="flex")
    ap.add_argument("--cells", required=True, help="MASK:SEQLEN:MODE,...")
    ap.add_argument("--calls", type=int, default=50)
    a = ap.parse_args()
    for spec in a.cells.split(","):
        mask, seqlen, mode = spec.split(":")
        print(check(a.kernel, mask, seqlen, mode, a.calls), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
