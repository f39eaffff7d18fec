"""Per rank of a CP cell: its kernel calls (shape and form) and their time, on one device.

Issue 16's items 2 and 4 ask why ranks with equal mask area take different times. For each rank
of a cell this builds the plan cp.emulate builds, lists every kernel call of every step
(q rows x k rows, the step form), times each call alone (fwd, and bwd from that call's own
forward) and the rank's whole emulated step (calls + merges + copies, as cp.emulate times it).
ring_allgather is measured with its backward calls cut at the diagonal (today) and uncut (the
calls before issue 16) so the two can be compared on the same device.

    python scripts/cp_rank_calls.py --kernel cudnn --cp ring_allgather --mask causal --seqlen 32k \
        --world 2 --out rank_calls.jsonl
    python scripts/cp_rank_calls.py --kernel cudnn --cp ring --shard balanced --mask causal_document ...
Appends one JSON line per (rank, variant) to --out and prints a table. CPU works (tiny sizes).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from lcab.compose import compose_config
from lcab.cp.strategies.ring_allgather import AllGatherPlan, gathered_tiles
from lcab.cp.tiles import StepCache
from lcab.harness.inputs import inputs_for
from lcab.harness.timing import Schedule, measure
from lcab.pipeline.prepare import prepare, rank_plan
from lcab.plan import plan_cell


def _call_times(tile, glob, hq: int, hkv: int, dev, sched) -> tuple[float, float]:
    """(fwd ms, bwd ms) of one kernel call alone, on buffers of its shape (time depends on the
    shape and the sub-mask only)."""
    m, n = tile.q1 - tile.q0, tile.k1 - tile.k0
    q = glob.q.detach()[:, :m, :hq].contiguous()
    k = glob.k.detach()[:, :n, :hkv].contiguous()
    v = glob.v.detach()[:, :n, :hkv].contiguous()
    dout = glob.dout.detach()[:, :m, :hq].contiguous()
    out, lse = tile.fns.fwd(q, k, v)
    fwd = measure(lambda: tile.fns.fwd(q, k, v), dev, sched, 0).p50
    bwd = measure(lambda: tile.fns.bwd(dout, q, k, v, out, lse), dev, sched, 0).p50
    return fwd, bwd


def _variants(p, plan) -> dict:
    """name -> plan to time; ring_allgather also with the uncut backward calls."""
    if not isinstance(plan, AllGatherPlan):
        return {"plan": plan}
    runs = plan.shard.runs(plan.topo.rank)
    uncut = tuple(gathered_tiles(p.mask, runs, StepCache(p.kernel, p.shape), cut=False))
    return {"bwd_cut": plan, "bwd_uncut": replace(plan, bwd_tiles=uncut)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="cudnn")
    ap.add_argument("--cp", default="ring_allgather")
    ap.add_argument("--shard", default="zigzag")
    ap.add_argument("--mask", default="causal")
    ap.add_argument("--seqlen", default="32k", help="total tokens (all ranks)")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--shape", default="paper")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    over = [
        f"kernel={a.kernel}",
        f"cp={a.cp}",
        f"cp.shard={a.shard}",
        f"mask={a.mask}",
        f"seqlen={a.seqlen}",
        f"shape={a.shape}",
        f"bench.device={dev.type}",
    ]
    cell = plan_cell(compose_config(over))
    p = prepare(cell, dev, 0, a.world, emulated=True)
    glob = inputs_for(p.shape, p.mask, 0)
    sched = Schedule(1, a.iters)
    flush = 256 if dev.type == "cuda" else 0
    lines = []
    for r in range(a.world):
        for name, plan in _variants(p, rank_plan(p, r)).items():
            steps = [(s.source, s.tiles) for s in plan.steps]
            bwd_steps = [(None, list(plan.bwd_tiles))] if isinstance(plan, AllGatherPlan) else steps
            calls = []
            for phase, st in (("fwd", steps), ("bwd", bwd_steps)):
                for src, tiles in st:
                    for t in tiles:
                        f, b = _call_times(t, glob, plan.heads_q, plan.heads_kv, dev, sched)
                        calls.append(
                            {
                                "phase": phase,
                                "source": src,
                                "q": t.q1 - t.q0,
                                "k": t.k1 - t.k0,
                                "area": int(t.area),
                                "form": t.fns.form,
                                "ms": f if phase == "fwd" else b,
                            }
                        )
            emu = {}
            for mode in ("fwd", "bwd"):  # ring_allgather's bwd runs plan.bwd_tiles (emulated_step)
                emu[mode] = measure(p.strategy.emulated_step(plan, glob, mode), dev, sched, flush).p50
            line = {
                "kernel": a.kernel,
                "cp": a.cp,
                "shard": a.shard,
                "mask": a.mask,
                "seqlen": p.mask.seqlen_q,
                "world": a.world,
                "rank": r,
                "variant": name,
                "area": float(plan.area),
                "rank_fwd_ms": emu["fwd"],
                "rank_bwd_ms": emu["bwd"],
                "calls_fwd": sum(c["phase"] == "fwd" for c in calls),
                "calls_bwd": sum(c["phase"] == "bwd" for c in calls),
                "calls_fwd_ms": sum(c["ms"] for c in calls if c["phase"] == "fwd"),
                "calls_bwd_ms": sum(c["ms"] for c in calls if c["phase"] == "bwd"),
                "calls": calls,
                "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
            }
            lines.append(line)
            print(
                f"{a.cp}/{a.shard} {a.kernel} {a.mask} S={line['seqlen']} rank {r} {name}: "
                f"fwd {emu['fwd']:.2f} ms ({line['calls_fwd']} calls, {line['calls_fwd_ms']:.2f} ms alone), "
                f"bwd {emu['bwd']:.2f} ms ({line['calls_bwd']} calls, {line['calls_bwd_ms']:.2f} ms alone), "
                f"area {plan.area:.3g}"
            )
            for c in calls:
                print(
                    f"    {c['phase']} src {c['source']} {c['q']}x{c['k']} area {c['area']} {c['form']}: {c['ms']:.3f} ms"
                )
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
