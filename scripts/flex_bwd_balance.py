"""How evenly Flex's backward spreads a mask's work over the SMs (a model, from the mask alone),
next to the measured backward of the same cells.

Flex's backward launches, per kv head, one program per key tile (dK, dV: it loops over the
GQA group's query heads and every query tile that sees the key tile) and one per (query tile,
query head) (dQ). A mask whose few key columns are seen by every row (share_question: the
question) gives a few very long dK/dV programs. The model list-schedules the programs, in
launch order, over the SMs, with a tile's cost 4 units in dK/dV and 3 in dQ (GEMMs per tile),
and reports makespan / (all work / SMs); tile counts are exact (lcab.masks.tiles).

    python scripts/flex_bwd_balance.py docs/results/h100/paper_kernels/results.jsonl
"""

from __future__ import annotations

import argparse
import heapq

from lcab.config import mask_config
from lcab.masks import build
from lcab.masks.tiles import tile_counts, tile_occupancy
from lcab.results.store import read_rows


def programs(mask, tile: int, heads_kv: int, group: int) -> list[float]:
    touched = tile_counts(mask, tile) > 0
    cols, rows = touched.sum(axis=0), touched.sum(axis=1)
    per_head = [4.0 * group * c for c in cols] + [3.0 * r for r in rows for _ in range(group)]
    return per_head * heads_kv


def imbalance(works: list[float], sms: int) -> float:
    free = [0.0] * sms  # when each SM is next free; a program goes to the first free SM
    for w in works:
        heapq.heappush(free, heapq.heappop(free) + w)
    return max(free) / (sum(works) / sms)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--masks", default="share_question,causal_document,causal_blockwise,causal")
    ap.add_argument("--seqlens", default="4096,8192,16384,32768,49152")
    ap.add_argument("--sms", type=int, default=132)
    a = ap.parse_args()
    ok = {}
    for r in read_rows(a.results):
        c = r["config"]
        if r["status"] == "ok" and c["kernel"]["name"] == "flex" and c["bench"]["mode"] == "bwd":
            ok[(c["mask"]["name"], c["seqlen"])] = r
    print("mask S | tile bound | model imbalance (full) | model fraction of full | measured fraction of full")
    for name in a.masks.split(","):
        for s in map(int, a.seqlens.split(",")):
            if (name, s) not in ok or ("full", s) not in ok:
                continue
            shape = ok[(name, s)]["config"]["shape"]
            heads_kv, group = shape["heads_kv"], shape["heads_q"] // shape["heads_kv"]
            mask = build(mask_config(ok[(name, s)]["config"]["mask"]), s)
            full = build(mask_config(ok[("full", s)]["config"]["mask"]), s)
            imb = imbalance(programs(mask, 128, heads_kv, group), a.sms)
            imb_full = imbalance(programs(full, 128, heads_kv, group), a.sms)
            occ = tile_occupancy(mask, 128)
            measured = ok[(name, s)]["metrics"]["tflops"] / ok[("full", s)]["metrics"]["tflops"]
            print(
                f"{name:18s} {s:6d} | {occ:.2f} | {imb:5.2f} ({imb_full:4.2f}) | {occ * imb_full / imb:.2f}"
                f" | {measured:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
