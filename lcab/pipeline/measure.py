"""The cell pipeline's second half, written once: inputs -> step -> verify -> timing -> metrics.
Timing comes in three forms, one per way a cell runs: here (one process, adaptive schedule),
on ranks (a fixed schedule with a barrier before each call, then an instrumented pass and the
ranks' metrics gathered to rank 0) and emulated (every rank's compute round-robin with the
monolithic kernel on one device)."""

from __future__ import annotations

import resource
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist

from lcab.config import typed
from lcab.cp import busbw
from lcab.cp.base import RunCtx
from lcab.cp.sharding import imbalance
from lcab.harness.flops import tflops_per_s
from lcab.harness.inputs import StepInputs, inputs_for
from lcab.harness.step import training_step
from lcab.harness.throughput import Work, throughput
from lcab.harness.timing import Schedule, Timing, measure, measure_interleaved
from lcab.harness.verify import Verdict, against_reference, kernel_outputs
from lcab.kernels.base import AttnFn
from lcab.masks.slices import AttnMask
from lcab.pipeline.prepare import Prepared, rank_plan
from lcab.plan import Cell


def cell_inputs(p: Prepared, seed: int) -> tuple[StepInputs, StepInputs]:
    """(the global inputs, this rank's share of them); at world 1 both are the same tensors."""
    glob = inputs_for(p.shape, p.mask, seed)
    return glob, p.strategy.local_inputs(glob, p.plan)


def check_numerics(
    fn: AttnFn, inputs: StepInputs, glob: StepInputs, p: Prepared, backward: bool
) -> Verdict | None:
    """One step's outputs (and gradients) in global order judged against the fp64 reference of
    the global inputs; collective on CP ranks, the verdict on rank 0 (None elsewhere)."""
    got = kernel_outputs(fn, inputs, backward)
    full = p.strategy.gather(got, p.plan)
    if full is None:
        return None
    return against_reference(full, glob, p.mask.dense(inputs.q.device), backward)


def verdict_metrics(v: Verdict) -> dict:
    out = {f"err_{k}": x for k, x in v.errors.items()}
    out.update({f"err_ratio_{k}": x for k, x in v.ratios.items()})
    out["verify_passed"] = v.passed
    out["verify_failures"] = v.failures()
    return out


def mask_facts(mask: AttnMask) -> dict:
    out = {"area": mask.area, "density": mask.density, "n_slices": len(mask.slices)}
    if mask.doc_lens is not None:
        out["n_docs"] = len(mask.doc_lens)
    return out


def cell_work(cell: Cell, p: Prepared) -> Work:
    """The global mask's work: what TFLOPs/s counts on every path."""
    s = p.shape
    return Work(
        p.mask.area,
        s.heads_q,
        s.head_dim,
        s.batch,
        cell.config["bench"]["mode"],
        cell.config["shape"]["dtype"],
    )


def _flush_mb(b: dict) -> float:
    return b["l2_flush_mb"] if b["l2_flush"] else 0


def measure_here(cell: Cell, p: Prepared, device: torch.device, run: RunCtx) -> dict:
    """One process, the whole cell (the identity strategy at world 1)."""
    b = cell.config["bench"]
    mode = b["mode"]
    glob, inputs = cell_inputs(p, b["seed"])
    fn = p.strategy.step_fn(p.plan, run)
    metrics = {**mask_facts(p.mask), **p.plan.notes}
    if b["verify"]:
        metrics.update(verdict_metrics(check_numerics(fn, inputs, glob, p, mode != "fwd")))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base_mem = torch.cuda.memory_allocated(device)
    timing = measure(training_step(fn, inputs, mode), device, Schedule.from_bench(b), _flush_mb(b))
    metrics.update(timing.summary())
    metrics["times_ms"] = list(timing.times_ms)
    if device.type == "cuda":
        metrics["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        metrics["step_mem_gib"] = (torch.cuda.max_memory_allocated(device) - base_mem) / 2**30
    metrics.update(throughput(cell_work(cell, p), timing.p50, 1, device))
    return metrics


def measure_ranks(cell: Cell, p: Prepared, device: torch.device, run: RunCtx) -> dict | None:
    """Every rank of a live process group; the cell's metrics on rank 0, None elsewhere."""
    b = cell.config["bench"]
    rank, world = p.topo.rank, p.topo.world
    mode = b["mode"]
    glob, inputs = cell_inputs(p, b["seed"])
    fn = p.strategy.step_fn(p.plan, run)
    metrics: dict = {}
    if b["verify"]:
        verdict = check_numerics(fn, inputs, glob, p, mode != "fwd")
        if verdict is not None:
            metrics.update(verdict_metrics(verdict))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    step = training_step(fn, inputs, mode)
    barrier = dist.barrier
    # A fixed schedule: an adaptive one sized on each rank's own probe could differ between
    # ranks, and every rank must make the same number of calls (collectives, barriers).
    timing = measure(step, device, Schedule(b["warmup"], b["iters"]), _flush_mb(b), barrier)
    # Instrumented pass: compute time per call, bytes and collectives per call.
    run.comm.stats.reset()
    run.timer.enabled = True
    n_inst = max(1, min(3, b["iters"]))
    inst = measure(step, device, Schedule(0, n_inst), 0, barrier)
    compute_ms = run.timer.total_ms() / (n_inst + 1)  # measure() makes one untimed first call
    regions_ms = {k: v / (n_inst + 1) for k, v in run.timer.region_ms().items()}
    stats = run.comm.stats
    calls = {k: v / (n_inst + 1) for k, v in stats.calls.items()}
    # After every timed call, so the probe's traffic overlaps none of them; collective.
    coll_bw = busbw.probe(stats, device) if typed("cp", cell.config["cp"]).busbw else None
    mine = {
        "times_ms": list(timing.times_ms),
        "inst_ms": inst.p50,
        "compute_ms": compute_ms,
        "regions_ms": regions_ms,
        "bytes_sent": stats.bytes_sent / (n_inst + 1),
        "bytes_by_kind": {k: v / (n_inst + 1) for k, v in stats.bytes_by_kind.items()},
        "calls": calls,
        "collectives": sum(calls.values()),
        "host_wait_ms": stats.wait_s * 1e3 / (n_inst + 1),
        "area": p.plan.area,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "notes": p.plan.notes,
    }
    every = [None] * world
    dist.all_gather_object(every, mine)
    if rank != 0:
        return None
    per_iter_max = np.max(np.asarray([e["times_ms"] for e in every]), axis=0)
    t = Timing(tuple(float(x) for x in per_iter_max))
    metrics.update(t.summary())
    metrics["times_ms"] = list(t.times_ms)
    metrics["rank_time_ms_p50"] = [float(np.median(e["times_ms"])) for e in every]
    metrics["rank_compute_ms"] = [e["compute_ms"] for e in every]
    # Time outside the kernels by region: "layout" (copies around collectives), "comm" (collectives).
    metrics["rank_region_ms"] = [e["regions_ms"] for e in every]
    # Exposed communication: what the instrumented call took beyond its kernel time.
    metrics["rank_exposed_comm_ms"] = [max(0.0, e["inst_ms"] - e["compute_ms"]) for e in every]
    metrics["rank_bytes_sent"] = [e["bytes_sent"] for e in every]
    metrics["rank_collectives"] = [e["collectives"] for e in every]
    metrics["rank_calls"] = [e["calls"] for e in every]
    metrics["rank_bytes_by_kind"] = [e["bytes_by_kind"] for e in every]
    if coll_bw is not None:
        metrics["coll_busbw"] = coll_bw
    metrics["rank_peak_mem_gib"] = [e["peak_mem_gib"] for e in every]
    metrics["rank_peak_rss_gib"] = [e["peak_rss_gib"] for e in every]
    metrics["peak_mem_gib"] = (
        max((e["peak_mem_gib"] or 0.0) for e in every) if device.type == "cuda" else None
    )
    areas = [e["area"] for e in every]
    metrics["rank_area"] = areas
    metrics["area_imbalance"] = imbalance(areas)
    metrics["shard_area_imbalance"] = imbalance([p.shard.row_area(p.mask, r) for r in range(world)])
    metrics.update(_cp_facts(p))
    metrics["step_forms"] = sorted({f for e in every for f in e["notes"].get("step_forms", [])})
    metrics["empty_steps"] = [e["notes"].get("empty_steps", 0) for e in every]
    # Per GPU: FLOPs of the global mask over (max-over-ranks time x world).
    metrics.update(throughput(cell_work(cell, p), t.p50, world, device))
    return metrics


def _cp_facts(p: Prepared) -> dict:
    d = p.topo.deg
    out = {
        **mask_facts(p.mask),
        "world": p.topo.world,
        "cp_degrees": asdict(d),
        "shard": p.shard.name,
        "shard_split": p.shard.notes.get("split"),
        "pad_tokens": p.shard.notes.get("pad_tokens"),
        "tokens_per_rank": p.shard.notes.get("tokens_per_rank"),
        "kv_heads_replicated": d.kv_replicas,
    }
    out.update({k: v for k, v in p.plan.notes.items() if k not in ("step_forms", "empty_steps")})
    return out


def measure_emulated(cell: Cell, p: Prepared, device: torch.device) -> dict:
    """cp.emulate=W: every rank's per-step compute of the strategy, run rank after rank on this
    device with communication replaced by local copies (its volume counted from the plan, not
    timed), against the monolithic kernel on the same mask:
      compute_efficiency = (T_mono / W) / max_r T_r
    i.e. how close the slowest rank comes to a perfect 1/W share of the single-device kernel
    (< 1 from load imbalance, per-step overheads and smaller, less efficient kernel calls)."""
    b = cell.config["bench"]
    mode, w = b["mode"], p.topo.world
    glob = inputs_for(p.shape, p.mask, b["seed"])
    calls, areas, nbytes = [], [], []
    for r in range(w):
        plan = rank_plan(p, r)
        calls.append(p.strategy.emulated_step(plan, glob, mode))
        areas.append(plan.area)
        nbytes.append(p.strategy.comm_bytes(plan, p.shape, mode))
    calls.append(training_step(p.kernel.prepare(p.mask, p.shape), glob, mode))
    # Every rank and the monolithic kernel round-robin, so device drift favours none of them.
    *timings, mono = measure_interleaved(calls, device, Schedule.from_bench(b), _flush_mb(b))
    times = [t.p50 for t in timings]
    t_max = max(times)
    slowest = timings[times.index(t_max)]
    work = cell_work(cell, p)
    return {
        **slowest.summary(),  # the emulated step time: the slowest rank's compute, no comm
        "emulated_world": w,
        "area": p.mask.area,
        "density": p.mask.density,
        "shard": p.shard.name,
        "pad_tokens": p.shard.notes["pad_tokens"],
        "shard_split": p.shard.notes["split"],
        "cp_degrees": asdict(p.topo.deg),
        "rank_compute_ms": times,
        "compute_ms_max": t_max,
        "mono_ms": mono.p50,
        "compute_efficiency": (mono.p50 / w) / t_max,
        "rank_area": areas,
        "area_imbalance": imbalance(areas),
        "rank_bytes_sent_counted": nbytes,
        "comm": "replaced by local copies; bytes counted, not timed",
        **throughput(work, t_max, w, device),
        "mono_tflops": tflops_per_s(work.flops, mono.p50 / 1e3),
    }
