"""One-device emulation of a CP world (cp.emulate=W): every rank's per-step compute of the
strategy, run rank after rank on this device, with communication replaced by local copies
(its volume counted from the plan, not timed).

Reported: per-rank compute time, its max, the monolithic kernel's time on the same mask, and
  compute_efficiency = (T_mono / W) / max_r T_r
i.e. how close the slowest rank comes to a perfect 1/W share of the single-device kernel
(< 1 from load imbalance, per-step overheads and smaller, less efficient kernel calls).
Each strategy supplies its ranks' compute and byte count (Strategy.emulated_step / comm_bytes);
one that cannot be emulated is recorded as unsupported with its reason.
"""

from __future__ import annotations

from dataclasses import asdict

from lcab.config import MaskConfig
from lcab.cp import registry
from lcab.cp.base import Topology
from lcab.cp.sharding import imbalance, make_shard
from lcab.execute import run_on_device, shape_spec
from lcab.harness.flops import attention_flops, tflops_per_s
from lcab.harness.inputs import inputs_for
from lcab.harness.step import training_step
from lcab.harness.throughput import throughput_metrics
from lcab.harness.timing import Schedule, measure_interleaved
from lcab.kernels.base import Unavailable, Unsupported
from lcab.masks import build as build_mask
from lcab.plan import Cell
from lcab.results.schema import Result


def emulate_cell(cell: Cell) -> Result:
    return run_on_device(cell, _emulate)


def _emulate(cell: Cell, kernel, device) -> dict:
    c, b = cell.config, cell.config["bench"]
    cp = c["cp"]
    w = int(cp["emulate"])
    ok, why = kernel.available(device)
    if not ok:
        raise Unavailable(why)
    strategy = registry.get(cp["name"])
    if strategy.cannot_emulate:
        raise Unsupported(strategy.cannot_emulate)
    spec = shape_spec(cell, device)
    deg = strategy.check(cp, spec, w)
    mask = build_mask(MaskConfig(**c["mask"]), c["seqlen"])
    kernel.check(mask, spec)
    shard = make_shard(cp["shard"], mask, w)
    mode = b["mode"]
    glob = inputs_for(spec, mask, b["seed"])
    flush = b["l2_flush_mb"] if b["l2_flush"] else 0
    calls, areas, nbytes = [], [], []
    for r in range(w):
        topo = Topology(w, r, deg, intra=bool(cp.get("ulysses_intra_node", True)))
        plan = strategy.plan(mask, shard, topo, kernel, spec)
        calls.append(strategy.emulated_step(plan, glob, mode))
        areas.append(plan.area)
        nbytes.append(strategy.comm_bytes(plan, spec, mode))
    mono_fn = kernel.prepare(mask, spec)
    calls.append(training_step(mono_fn, glob, mode))
    # Every rank and the monolithic kernel round-robin, so device drift favours none of them.
    *timings, mono = measure_interleaved(calls, device, Schedule.from_bench(b), flush)
    times = [t.p50 for t in timings]
    flops = attention_flops(mask.area, spec.heads_q, spec.head_dim, spec.batch, mode)
    t_max = max(times)
    slowest = timings[times.index(t_max)]
    return {
        **slowest.summary(),  # the emulated step time: the slowest rank's compute, no comm
        "emulated_world": w,
        "area": mask.area,
        "density": mask.density,
        "shard": shard.name,
        "pad_tokens": shard.notes["pad_tokens"],
        "shard_split": shard.notes["split"],
        "cp_degrees": asdict(deg),
        "rank_compute_ms": times,
        "compute_ms_max": t_max,
        "mono_ms": mono.p50,
        "compute_efficiency": (mono.p50 / w) / t_max,
        "rank_area": areas,
        "area_imbalance": imbalance(areas),
        "rank_bytes_sent_counted": nbytes,
        "comm": "replaced by local copies; bytes counted, not timed",
        **throughput_metrics(
            mask.area, spec.heads_q, spec.head_dim, spec.batch, mode, t_max, w, c["shape"]["dtype"], device
        ),
        "mono_tflops": tflops_per_s(flops, mono.p50 / 1e3),
    }
