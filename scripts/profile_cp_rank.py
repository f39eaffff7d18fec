"""Where one emulated CP rank spends its time: kernel calls vs merge/accumulate/copies.

Builds one rank's plan of a strategy (lcab.pipeline, as cp.emulate does), times fwd and bwd separately
against the monolithic kernel's fwd and bwd, and prints the top CUDA kernels of one fwd_bwd.

    python scripts/profile_cp_rank.py --kernel sdpa_cudnn --cp ring --mask causal --seqlen 64k --world 8
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from lcab.compose import compose_config
from lcab.harness.inputs import inputs_for
from lcab.harness.step import training_step
from lcab.harness.timing import Schedule, measure
from lcab.pipeline.prepare import prepare, rank_plan
from lcab.plan import plan_cell


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="sdpa_cudnn")
    ap.add_argument("--cp", default="ring")
    ap.add_argument("--shard", default="zigzag")
    ap.add_argument("--mask", default="causal")
    ap.add_argument("--seqlen", default="64k")
    ap.add_argument("--world", type=int, default=8)
    ap.add_argument("--rank", type=int, default=0)
    a = ap.parse_args()
    over = [f"kernel={a.kernel}", f"cp={a.cp}", f"cp.shard={a.shard}", f"mask={a.mask}", f"seqlen={a.seqlen}"]
    cell = plan_cell(compose_config(over))
    dev = torch.device("cuda")
    p = prepare(cell, dev, 0, a.world, emulated=True)  # the plan cp.emulate builds
    strategy, kernel, mask, spec = p.strategy, p.kernel, p.mask, p.shape
    plan = rank_plan(p, a.rank)
    glob = inputs_for(spec, mask, 0)
    tiles = [(s.source, [(t.q0, t.q1, t.k0, t.k1, t.fns.form) for t in s.tiles]) for s in plan.steps]
    print("steps (member, tiles q0:q1 x k0:k1 form):")
    for m, tl in tiles:
        print(f"  member {m}: {tl}")
    mono = kernel.prepare(mask, spec)
    for mode in ("fwd", "bwd"):
        rank_t = measure(strategy.emulated_step(plan, glob, mode), dev, Schedule(3, 10), 256).p50
        mono_t = measure(training_step(mono, glob, mode), dev, Schedule(3, 10), 256).p50
        print(
            f"{mode}: rank {rank_t:.2f} ms, mono/W {mono_t / a.world:.2f} ms, efficiency {mono_t / a.world / rank_t:.3f}"
        )
    call = strategy.emulated_step(plan, glob, "fwd_bwd")
    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=70))


if __name__ == "__main__":
    main()
