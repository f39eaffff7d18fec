"""What compiling FlexAttention costs a sweep, static vs dynamic shapes, and what it does to speed.

Runs flex cells through lcab's real path (compose -> plan -> execute) in one process, in
sweep order (seqlen, then fwd and bwd), and prints each cell's wall time (compile included)
and TFLOPs/s. Run once per mode, each in a fresh process, so each pays its own compiles:

    python scripts/flex_compile_check.py --dynamic false --masks full,causal_document --seqlens 8k,16k,24k,32k
    python scripts/flex_compile_check.py --dynamic true  --masks full,causal_document --seqlens 8k,16k,24k,32k

Every --stall seconds inside one cell, every thread's Python stack is dumped (the process goes
on): that shows where a long compile spends its time.

--cells MASK:SEQLEN:MODE,... runs exactly those cells in that order instead of the grid, and
after each prints how many kernels Triton compiled for it (new cubins in TRITON_CACHE_DIR) and
dynamo's compile-phase times so far: which cells pay for which compiles.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import time
from pathlib import Path

from lcab.compose import compose_config
from lcab.pipeline import execute
from lcab.plan import plan_cell


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dynamic", choices=("true", "false"), required=True)
    ap.add_argument("--masks", default="full,causal_document")
    ap.add_argument("--seqlens", default="8k,16k,24k,32k")
    ap.add_argument("--stall", type=float, default=150.0)
    ap.add_argument("--extra", nargs="*", default=[])
    ap.add_argument("--cells", default="", help="MASK:SEQLEN:MODE,... instead of the grid")
    a = ap.parse_args()
    if a.cells:
        cells = [tuple(c.split(":")) for c in a.cells.split(",")]
    else:
        cells = [
            (m, s, mode) for m in a.masks.split(",") for s in a.seqlens.split(",") for mode in ("fwd", "bwd")
        ]
    total = time.perf_counter()
    cubins = _cubins()
    for mask, seqlen, mode in cells:
        over = [
            "kernel=flex",
            f"kernel.dynamic={a.dynamic}",
            f"mask={mask}",
            f"seqlen={seqlen}",
            f"bench.mode={mode}",
            "shape=paper",
            "bench.budget_ms=150",
            "bench.iters=20",
            "bench.warmup=5",
            *a.extra,
        ]
        cell = plan_cell(compose_config(over))
        faulthandler.dump_traceback_later(a.stall, repeat=True, file=sys.stderr)
        t0 = time.perf_counter()
        res = execute(cell)
        wall = time.perf_counter() - t0
        faulthandler.cancel_dump_traceback_later()
        m = res.metrics
        print(
            f"dynamic={a.dynamic} {mask:16s} S={seqlen:>4s} {mode}: {res.status:5s} wall {wall:6.1f} s"
            f"  p50 {m.get('time_ms_p50', float('nan')):8.3f} ms"
            f"  {m.get('tflops', float('nan')):6.1f} TFLOPs/s  spread {m.get('time_spread', 0):.3f}"
            f"  {res.reason[:120]}",
            flush=True,
        )
        if a.cells:
            now = _cubins()
            print(f"  triton kernels compiled for this cell: {len(now - cubins)}", flush=True)
            cubins = now
            _compile_times()
    print(f"dynamic={a.dynamic}: all cells {time.perf_counter() - total:.1f} s", flush=True)
    return 0


def _cubins() -> set[Path]:
    root = Path(os.environ.get("TRITON_CACHE_DIR", Path.home() / ".triton" / "cache"))
    return set(root.rglob("*.cubin")) if root.is_dir() else set()


def _compile_times() -> None:
    from torch._dynamo.utils import compile_times

    print("  " + compile_times(repr="str").replace("\n", "\n  ")[:1500], flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
