#!/usr/bin/env python3
"""Does a wave tail explain why a 32-head cuDNN backward is slower per head than a 64-head one?

A hypothesis checked on paper (docs/results/predict/README.md): the backward runs one program per
(key tile, kv head), programs start in launch order (head-major) on the GPU's SMs, and a call
takes as long as its busiest SM. Per mask, this prints the makespan over total work / SMs at 8
and 4 kv heads (64:8 and 32:4 query:kv heads) and what scaling lcab.predict's Ulysses emu2
predictions by the ratio would give beside what was measured (from a validate output).

    python scripts/predict_wave_tail.py docs/results/predict/validate_h200x2_emulated8k.txt
"""

from __future__ import annotations

import argparse
import heapq
import re
from pathlib import Path

import numpy as np

from lcab.predict.planonly import _tile_rows, build_mask

LINE = re.compile(r"ulysses\(zigzag\) (\S+) S=(\d+) bwd emu2\s+measured ([\d.]+) ms\s+predicted ([\d.]+) ms")


def key_tile_work(name: str, seqlen: int) -> np.ndarray:
    """Query tiles each key tile's backward program visits (touched 128 x 128 tiles)."""
    mask = build_mask(name, seqlen)
    lo, hi = _tile_rows(mask.row_intervals.lo, mask.row_intervals.hi)
    diff = np.zeros(lo.shape[0] + 1)
    for j in range(lo.shape[1]):  # each query tile adds 1 over its key tiles [lo, hi)
        np.add.at(diff, lo[:, j], (hi[:, j] > lo[:, j]).astype(float))
        np.add.at(diff, hi[:, j], -(hi[:, j] > lo[:, j]).astype(float))
    return np.cumsum(diff)[:-1]


def tail_factor(work: np.ndarray, heads: int, sms: int) -> float:
    """Makespan of the programs in launch order on `sms` SMs over total work / sms."""
    load = [0.0] * sms
    for w in np.tile(work, heads):
        heapq.heappush(load, heapq.heappop(load) + w)
    return max(load) / (work.sum() * heads / sms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "validate_output", help="lines of `python -m lcab.predict validate` on Ulysses emu2 cells"
    )
    ap.add_argument("--sms", type=int, default=132, help="SMs of the GPU (H200: 132)")
    a = ap.parse_args()
    for line in Path(a.validate_output).read_text().splitlines():
        m = LINE.search(line)
        if not m:
            continue
        name, s, measured, predicted = m.group(1), int(m.group(2)), float(m.group(3)), float(m.group(4))
        work = key_tile_work(name, s)
        f8, f4 = tail_factor(work, 8, a.sms), tail_factor(work, 4, a.sms)
        scaled = predicted * f4 / f8
        print(
            f"{name} S={s} bwd: tail 8 kv heads {f8:.3f}, 4 kv heads {f4:.3f} (x{f4 / f8:.3f});"
            f" predicted {predicted:.3f} -> {scaled:.3f} ms ({scaled / measured - 1:+.1%}),"
            f" measured {measured:.3f} ms (today {predicted / measured - 1:+.1%})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
