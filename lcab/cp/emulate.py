"""One-device emulation of a CP world (cp.emulate=W): every rank's per-step compute of the
strategy, run rank after rank on this device, with communication replaced by local copies
(its volume counted from the plan, not timed).

Reported: per-rank compute time, its max, the monolithic kernel's time on the same mask, and
  compute_efficiency = (T_mono / W) / max_r T_r
i.e. how close the slowest rank comes to a perfect 1/W share of the single-device kernel
(< 1 from load imbalance, per-step overheads and smaller, less efficient kernel calls).
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from lcab.config import MaskConfig
from lcab.cp import base as strategies
from lcab.cp.base import RankPlan, Topology
from lcab.cp.merge import LseAccumulator, acc_dtype
from lcab.cp.ring import _forward_tiles, backward_step
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


def _gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    pad = idx < 0
    return t.index_select(1, torch.where(pad, 0, idx)).masked_fill(pad[None, :, None, None], 0)


def _buffers(name: str, plan: RankPlan, shard, glob, topo: Topology):
    """(q buffer, dout buffer, kv buffer per ring member) of one rank, heads already split."""
    deg = topo.deg
    u = topo.uly_index
    hq = plan.heads_q
    q, k, v, dout = (t.detach() for t in (glob.q, glob.k, glob.v, glob.dout))
    if deg.kv_replicas > 1:
        k, v = k.repeat_interleave(deg.kv_replicas, 2), v.repeat_interleave(deg.kv_replicas, 2)
    hk = plan.heads_kv
    qs, ks = slice(u * hq, (u + 1) * hq), slice(u * hk, (u + 1) * hk)
    if name == "ulysses":
        return q[:, :, qs], dout[:, :, qs], lambda m: torch.stack([k[:, :, ks], v[:, :, ks]])
    if name == "ring_allgather":
        idx = torch.from_numpy(shard.index(topo.rank)).to(q.device)
        return _gather(q, idx), _gather(dout, idx), lambda m: torch.stack([k, v])

    def group_idx(ring_index: int) -> torch.Tensor:
        parts = [torch.from_numpy(shard.index(r)) for r in topo.uly_ranks(ring_index)]
        return torch.cat(parts).to(q.device)

    qi = group_idx(topo.ring_index)
    kvs = {}

    def kv(m: int):
        if m not in kvs:
            i = group_idx(m)
            kvs[m] = torch.stack([_gather(k[:, :, ks], i), _gather(v[:, :, ks], i)])
        return kvs[m]

    return _gather(q[:, :, qs], qi), _gather(dout[:, :, qs], qi), kv


def _rank_compute(plan: RankPlan, qb, doutb, kv_of, mode: str):
    steps = [(kv_of(m), tiles) for m, tiles in plan.steps]
    adt = acc_dtype(qb.dtype)

    def fwd():
        acc = LseAccumulator(qb)
        for kv, tiles in steps:
            _forward_tiles(qb, kv, tiles, acc)
        return acc.out.to(qb.dtype), acc.lse

    out, lse = fwd()

    def bwd():
        dq = torch.zeros(qb.shape, dtype=adt, device=qb.device)
        for kv, tiles in steps:
            backward_step(doutb, qb, kv, out, lse, tiles, dq)
        return dq

    if mode == "fwd":
        return fwd
    if mode == "bwd":
        return bwd
    return lambda: (fwd(), bwd())


def _comm_bytes(name: str, shard, spec, deg, mode: str) -> float:
    """Bytes this rank would send per step call in `mode` (counted from the algorithm, not timed).
    After a Ulysses all-to-all a rank's K/V buffer (U*L tokens x Hkv/U heads) has the bytes of
    its local K/V; dK/dV travel in fp32."""
    el = spec.dtype.itemsize
    acc = acc_dtype(spec.dtype).itemsize
    u, r = deg.ulysses, deg.ring
    kv = 2 * spec.batch * shard.local_len * spec.heads_kv * deg.kv_replicas * spec.head_dim * el
    q = spec.batch * shard.local_len * spec.heads_q * spec.head_dim * el
    a2a = (u - 1) / u * (2 * q + kv)  # q and out, plus k and v
    if name == "ring_allgather":
        fwd, bwd = (r - 1) * kv, (r - 1) / r * r * kv * acc / el
    else:
        fwd, bwd = a2a + (r - 1) * kv, a2a + (r - 1) * kv + r * kv * acc / el
    return {"fwd": fwd, "bwd": bwd, "fwd_bwd": fwd + bwd}[mode]


def emulate_cell(cell: Cell) -> Result:
    return run_on_device(cell, _emulate)


def _emulate(cell: Cell, kernel, device) -> dict:
    c, b = cell.config, cell.config["bench"]
    cp = c["cp"]
    w = int(cp["emulate"])
    ok, why = kernel.available(device)
    if not ok:
        raise Unavailable(why)
    strategy = strategies.get(cp["name"])
    if strategy.name in ("torch_ring", "yunchang_usp"):
        raise Unsupported(f"{strategy.name} is a peer implementation; cp.emulate runs lcab's strategies only")
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
        if "fn" in plan.extra:
            raise Unsupported(f"{kernel.name} has no step functions; emulation times per-step calls")
        qb, doutb, kv_of = _buffers(strategy.name, plan, shard, glob, topo)
        calls.append(_rank_compute(plan, qb, doutb, kv_of, mode))
        areas.append(plan.area)
        nbytes.append(_comm_bytes(strategy.name, shard, spec, deg, mode))
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
