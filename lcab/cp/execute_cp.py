"""One CP cell on every rank of an initialised process group -> Result on rank 0.

Phase 1 (no communication): strategy and kernel checks, mask, sharding, the rank's plan. Its
outcome is agreed over all ranks first, so a cell that cannot run (unsupported, bad degrees)
becomes a recorded status on every rank instead of a hang. Phase 2 (collective): groups,
inputs, optional verification, timing with a barrier before each call, one instrumented pass
for compute time, bytes and collective counts, then every rank's metrics go to rank 0.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist

from lcab.config import ConfigError, MaskConfig
from lcab.cp import busbw, registry
from lcab.cp.base import RankPlan, RunCtx, Strategy, Topology
from lcab.cp.comm import Comm, all_gather_tensor
from lcab.cp.sharding import Shard, imbalance, make_shard
from lcab.cp.timer import ComputeTimer
from lcab.execute import classify, judge, now, shape_spec
from lcab.harness import memory
from lcab.harness.inputs import StepInputs, inputs_for
from lcab.harness.step import training_step
from lcab.harness.throughput import throughput_metrics
from lcab.harness.timing import Schedule, Timing, measure
from lcab.harness.verify import compare, kernel_outputs, reference
from lcab.kernels import base as kernels
from lcab.kernels.base import ShapeSpec, Unavailable, Unsupported
from lcab.masks import build as build_mask
from lcab.masks.slices import AttnMask
from lcab.plan import Cell
from lcab.results.env import environment
from lcab.results.schema import Result, Status


@dataclass
class Prepared:
    strategy: Strategy
    kernel: kernels.Kernel
    mask: AttnMask
    shape: ShapeSpec
    shard: Shard
    topo: Topology
    plan: RankPlan


def prepare(cell: Cell, device: torch.device, rank: int, world: int) -> Prepared:
    """Everything that needs no communication; raises ConfigError / Unsupported / Unavailable."""
    c = cell.config
    cp = c["cp"]
    strategy = registry.get(cp["name"])
    kernel = kernels.get(c["kernel"]["name"])
    kernel.configure(**{k: v for k, v in c["kernel"].items() if k != "name"})
    ok, why = kernel.available(device)
    if not ok:
        raise Unavailable(why)
    mode = c["bench"]["mode"]
    if mode != "fwd" and not kernel.has_backward(device.type):
        raise Unsupported(f"{kernel.name} has no backward on {device.type}")
    shape = shape_spec(cell, device)
    deg = strategy.check(cp, shape, world)
    # This rank's share of the step's tensors and the global mask's rows, before either exists.
    local = -(-c["seqlen"] // world)
    need = memory.Footprint(
        tensors=memory.step_tensors(shape, local, local, mode), mask=memory.mask_rows(None, c["seqlen"])
    )
    memory.check(need, device)
    mask = build_mask(MaskConfig(**c["mask"]), c["seqlen"])
    kernel.check(mask, shape)
    shard = make_shard(cp["shard"], mask, world)
    topo = Topology(world, rank, deg, intra=bool(cp.get("ulysses_intra_node", True)))
    plan = strategy.plan(mask, shard, topo, kernel, shape)
    if mode != "fwd" and plan.no_backward:  # peers whose backward is missing
        raise Unsupported(plan.no_backward)
    # A peer may lay tokens out its own way (yunchang's extract_local); lcab cuts and gathers that.
    return Prepared(strategy, kernel, mask, shape, plan.shard, topo, plan)


def open_cell(p: Prepared, cp: dict, device: torch.device) -> RunCtx:
    """This cell's process groups (collective: every rank calls it) with a fresh comm and timer."""
    groups = p.strategy.process_groups(p.topo, cp.get("groups", "mesh"), device)
    return RunCtx(Comm(), ComputeTimer(device), groups)


def local_inputs(inputs: StepInputs, shard: Shard, rank: int) -> StepInputs:
    """This rank's tokens (trailing padding = zeros) as fresh leaves."""
    idx = torch.from_numpy(shard.index(rank)).to(inputs.q.device)
    pad = idx < 0
    take = torch.where(pad, 0, idx)

    def cut(t: torch.Tensor, grad: bool) -> torch.Tensor:
        x = t.detach().index_select(1, take).masked_fill(pad[None, :, None, None], 0)
        return x.requires_grad_(grad)

    return StepInputs(cut(inputs.q, True), cut(inputs.k, True), cut(inputs.v, True), cut(inputs.dout, False))


def gather_global(local: dict[str, torch.Tensor], shard: Shard, seqlen: int, group=None) -> dict | None:
    """Every rank's local tensors -> global order on rank 0 (None elsewhere)."""
    out = {}
    w = shard.world
    for name, t in local.items():
        t = t.contiguous()
        buf = torch.empty((w * t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
        all_gather_tensor(buf, t, group=group)
        if dist.get_rank() == 0:
            parts = buf.view(w, *t.shape)
            g = torch.zeros((t.shape[0], seqlen, *t.shape[2:]), dtype=t.dtype, device=t.device)
            for r in range(w):
                idx = torch.from_numpy(shard.index(r)).to(t.device)
                keep = idx >= 0
                g[:, idx[keep]] = parts[r][:, keep]
            out[name] = g
    return out if dist.get_rank() == 0 else None


def _agree(err: tuple[str, str] | None) -> tuple[int, str, str] | None:
    errs = [None] * dist.get_world_size()
    dist.all_gather_object(errs, err)
    for r, e in enumerate(errs):
        if e is not None:
            return r, e[0], e[1]
    return None


def run_rank(cell: Cell, device: torch.device) -> Result | None:
    """Run the cell on this rank; Result on rank 0, None on the others. Failures after the
    agreed preparation propagate: the launcher turns them into the job's error status."""
    c = cell.config
    rank, world = dist.get_rank(), dist.get_world_size()
    res = Result(cell_id=cell.cell_id, status=Status.ERROR.value, config=c, started_at=now())
    prep, err = None, None
    try:
        if world != c["world"]:
            raise ConfigError(f"cell expects world {c['world']} but the process group has {world} ranks")
        prep = prepare(cell, device, rank, world)
    except (ConfigError, Unsupported, Unavailable, ValueError, KeyError) as exc:
        st, why = classify(exc)
        err = (st.value, why.strip("'\""))
    agreed = _agree(err)
    kernel_versions = prep.kernel.versions() if prep else {}
    if agreed is not None:
        if rank != 0:
            return None
        _, res.status, why = agreed
        res.reason = why
        res.env = environment(device, kernel_versions)
        res.finished_at = now()
        return res
    run = open_cell(prep, c["cp"], device)
    fault = os.environ.get("LCAB_FAULT_RANK")  # fault injection for the launcher's tests
    if fault is not None and int(fault) == rank:
        if os.environ.get("LCAB_FAULT_KIND", "raise") == "hang":
            time.sleep(3600)  # the peers' next collective times out
        raise RuntimeError(f"injected fault on rank {rank} (LCAB_FAULT_RANK)")
    metrics = _measure(cell, prep, device, run)
    if rank != 0:
        return None
    res.env = environment(device, kernel_versions)
    res.metrics = metrics
    res.status, res.reason = judge(metrics)
    res.finished_at = now()
    return res


def _measure(cell: Cell, p: Prepared, device: torch.device, run: RunCtx) -> dict | None:
    c, b = cell.config, cell.config["bench"]
    rank, world = p.topo.rank, p.topo.world
    mode = b["mode"]
    mask, shape = p.mask, p.shape
    glob = inputs_for(shape, mask, b["seed"])
    inputs = local_inputs(glob, p.shard, rank)

    def fn(q, k, v):
        return p.strategy.attention(q, k, v, p.plan, run), None

    metrics: dict = {}
    if b["verify"]:
        metrics.update(_verify(fn, inputs, glob, p, mode))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    step = training_step(fn, inputs, mode)
    barrier = dist.barrier
    # A fixed schedule: an adaptive one sized on each rank's own probe could differ between
    # ranks, and every rank must make the same number of calls (collectives, barriers).
    fixed = Schedule(b["warmup"], b["iters"])
    timing = measure(step, device, fixed, b["l2_flush_mb"] if b["l2_flush"] else 0, barrier)
    # Instrumented pass: compute time per call, bytes and collectives per call.
    run.comm.stats.reset()
    run.timer.enabled = True
    n_inst = max(1, min(3, b["iters"]))
    inst = measure(step, device, Schedule(0, n_inst), 0, barrier)
    compute_ms = run.timer.total_ms() / (n_inst + 1)  # measure() makes one untimed first call
    stats = run.comm.stats
    calls = {k: v / (n_inst + 1) for k, v in stats.calls.items()}
    # After every timed call, so the probe's traffic overlaps none of them; collective.
    coll_bw = busbw.probe(stats, device) if c["cp"].get("busbw", True) else None
    mine = {
        "times_ms": list(timing.times_ms),
        "inst_ms": inst.p50,
        "compute_ms": compute_ms,
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
    metrics["shard_area_imbalance"] = imbalance([p.shard.row_area(mask, r) for r in range(world)])
    metrics.update(_cell_facts(p, mask))
    metrics["step_forms"] = sorted({f for e in every for f in e["notes"].get("step_forms", [])})
    metrics["empty_steps"] = [e["notes"].get("empty_steps", 0) for e in every]
    # Per GPU: FLOPs of the global mask over (max-over-ranks time x world).
    metrics.update(
        throughput_metrics(
            mask.area,
            shape.heads_q,
            shape.head_dim,
            shape.batch,
            mode,
            t.p50,
            world,
            c["shape"]["dtype"],
            device,
        )
    )
    return metrics


def _cell_facts(p: Prepared, mask: AttnMask) -> dict:
    d = p.topo.deg
    out = {
        "area": mask.area,
        "density": mask.density,
        "n_slices": len(mask.slices),
        "world": p.topo.world,
        "cp_degrees": asdict(d),
        "shard": p.shard.name,
        "shard_split": p.shard.notes.get("split"),
        "pad_tokens": p.shard.notes.get("pad_tokens"),
        "tokens_per_rank": p.shard.notes.get("tokens_per_rank"),
        "kv_heads_replicated": d.kv_replicas,
    }
    if mask.doc_lens is not None:
        out["n_docs"] = len(mask.doc_lens)
    out.update({k: v for k, v in p.plan.notes.items() if k not in ("step_forms", "empty_steps")})
    return out


def _verify(fn, inputs: StepInputs, glob: StepInputs, p: Prepared, mode: str) -> dict:
    backward = mode != "fwd"
    got = kernel_outputs(fn, inputs, backward)
    full = gather_global(got, p.shard, p.mask.seqlen_q)
    if full is None:
        return {}
    dense = p.mask.dense(inputs.q.device)
    dtype = inputs.q.dtype
    ref64 = reference(glob, dense, torch.float64, backward)
    lowp = reference(glob, dense, dtype, backward) if dtype != torch.float64 else ref64
    v = compare(full, ref64, lowp, dtype)
    out = {f"err_{k}": x for k, x in v.errors.items()}
    out.update({f"err_ratio_{k}": x for k, x in v.ratios.items()})
    out["verify_passed"] = v.passed
    out["verify_failures"] = v.failures()
    return out
