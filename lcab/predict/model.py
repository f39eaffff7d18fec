"""A cell's predicted time: the plan's per-step work through the fitted step kernel, merges at
the GPU's memory bandwidth, messages through the alpha-beta links, all on the strategy's
timeline. One Prediction per candidate, with the bottleneck named.

Bottleneck = the largest of three losses against the ideal (the monolithic kernel's time on the
whole mask, divided by the world): exposed communication (time - slowest rank's compute),
compute imbalance (slowest - mean rank compute), step-kernel efficiency (mean compute - ideal:
smaller, cut or partial-tile calls and the LSE merges).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from lcab.harness.flops import attention_flops
from lcab.predict import comm as links
from lcab.predict.cluster import ClusterModel
from lcab.predict.kernel_fit import DENSE, PAIR_CUT, CallWork, KernelFit
from lcab.predict.overlap import ring_hops_layout, ring_time
from lcab.predict.planonly import CellPlan, acc_bytes

# LSE merges and fp32 accumulations stream at this fraction of the HBM datasheet bandwidth
# (an assumption, not fitted; they are a few percent of a step).
HBM_EFFICIENCY = 0.8
PHASES = {"fwd": ("fwd",), "bwd": ("bwd",), "fwd_bwd": ("fwd", "bwd")}


@dataclass
class Prediction:
    strategy: str
    shard: str
    degrees: dict
    world: int
    mode: str
    time_ms: float
    tflops_per_gpu: float
    compute_ms: float  # slowest rank's compute
    mean_compute_ms: float
    ideal_ms: float  # monolithic kernel on the whole mask / world
    exposed_comm_ms: float
    bottleneck: str
    emulated: bool = False

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def step_compute(
    plan: CellPlan, fit: KernelFit, kernel: str, phase: str, cluster: ClusterModel
) -> np.ndarray:
    """[members, steps] seconds of each step: its kernel calls plus its merges."""
    dense = kernel in DENSE and plan.mask_name not in ("full", "causal")
    calls = plan.pair_calls if kernel in PAIR_CUT else plan.calls
    busy = plan.area > 0
    if kernel in PAIR_CUT and plan.strategy == "ring_allgather":
        # Gathered keys are one run: a query chunk is one call, two where cut at its diagonal,
        # and the calls' key ranges add up to about one key buffer.
        calls = np.minimum(calls, 2 * plan.q_chunks * busy)
    # A flash forward runs one program per query tile, a backward one per key tile (lcab.predict.
    # kernel_fit: on a kernel row both are S): the per-row cost follows the buffer it is laid on.
    grid = plan.q_rows if phase == "fwd" else plan.k_rows
    cut = kernel in PAIR_CUT and plan.strategy != "ring_allgather"
    rows = grid * (calls / plan.q_chunks if cut else busy)
    work = plan.q_rows * plan.k_rows * busy if dense else plan.tiles
    h = plan.heads_q * plan.shape.head_dim * plan.shape.batch
    kern = fit.coef[0] * calls + fit.coef[1] * 4.0 * work * h + fit.coef[2] * rows * h
    el = plan.shape.dtype.itemsize
    d, b = plan.shape.head_dim, plan.shape.batch
    if phase == "fwd":  # fp32 out/LSE merge: read acc, read the step's out, write acc
        merged = plan.q_rows * plan.heads_q * d * b * (8 + el)
    else:  # fp32 dq and dK/dV accumulation (read + write), dK/dV of the block
        merged = (plan.q_rows * plan.heads_q + 2 * plan.k_rows * plan.heads_kv) * d * b * (8 + el)
    merge = busy * merged / (cluster.hbm_gbps * 1e9 * HBM_EFFICIENCY)
    return kern + merge


def ideal_s(plan: CellPlan, fits: dict[str, KernelFit], kernel: str, mode: str, whole: CallWork) -> float:
    s = plan.shape
    return sum(fits[p].seconds(whole, s.heads_q, s.head_dim, s.batch) for p in PHASES[mode]) / plan.world


def _sent(plan: CellPlan, phase: str, dim: str) -> float:
    """Bytes of one call of each kind on `dim` in `phase`, summed over kinds (per call)."""
    return sum(m.nbytes for m in plan.messages if m.phase == phase and m.dim == dim and m.calls)


def layout_bytes(plan: CellPlan, phase: str) -> float:
    """HBM bytes one rank moves outside its kernel steps (read + write), as lcab's code does it:
    the K/V stack and the fp32 -> dtype casts of TiledLseAttention (fwd: out; bwd: the zeroed fp32
    dq, its cast, dK/dV's casts), Ulysses' send-buffer copies and token reorders, ring_allgather's
    gathered-key reorder and its fp32 dK/dV zero-fill, scatter and casts. Serial with the steps."""
    s = plan.shape
    el, acc = s.dtype.itemsize, acc_bytes(s.dtype.itemsize)
    h = s.head_dim * s.batch
    q = plan.q_rows * plan.heads_q * h  # elements of the step query buffer
    kv = plan.q_rows * plan.heads_kv * h  # one of K, V in the step buffer (before any gather)
    fwd = phase == "fwd"
    if plan.strategy == "ring_allgather":
        g = plan.seqlen * plan.heads_kv * h  # one of the gathered K, V
        if fwd:  # stack, reorder of the gathered keys, out cast
            return 2 * kv * 2 * el + 2 * g * 2 * el + q * (acc + el)
        # dq and dK/dV zero-fills, scatter (zero-fill + read/write), contiguous, casts
        return q * acc + 2 * g * acc * 6 + q * (acc + el) + 2 * kv * (acc + el)
    u = plan.deg.ulysses
    n = 0.0
    if u > 1:  # one copy per tensor around each all-to-all (q, k, v in; out back), both phases
        n += (2 * q + 2 * kv) * 2 * el
    if plan.strategy == "ulysses":  # one whole call: no stack, the kernel's own casts
        if plan.mask_name != "full":  # tokens reordered to global order and back (q, k, v, out)
            n += (2 * q + 2 * kv) * 2 * el
        return n
    n += 2 * kv * 2 * el  # torch.stack([k, v])
    if fwd:
        return n + q * (acc + el)
    return n + q * acc + q * (acc + el) + 2 * kv * (acc + el)


def phase_time(plan: CellPlan, compute: np.ndarray, cluster: ClusterModel, phase: str) -> float:
    """Wall time of one phase (fwd or bwd) on the strategy's timeline, its layout copies included."""
    return _timeline(plan, compute, cluster, phase) + layout_bytes(plan, phase) / (
        cluster.hbm_gbps * 1e9 * HBM_EFFICIENCY
    )


def _timeline(plan: CellPlan, compute: np.ndarray, cluster: ClusterModel, phase: str) -> float:
    a2a = sum(
        links.all_to_all_s(cluster, links.uly_ranks(plan), m.nbytes)
        for m in plan.messages
        if m.phase == phase and m.op == "all_to_all"
    )
    if plan.strategy == "ring_allgather":
        coll = sum(
            links.collective_s(cluster, m.op, list(range(plan.world)), m.nbytes)
            for m in plan.messages
            if m.phase == phase and m.op in ("all_gather", "reduce_scatter")
        )
        return a2a + coll + float(compute.max())
    r = plan.deg.ring
    if r == 1:
        return a2a + float(compute.sum(axis=1).max())
    double = plan.strategy == "double_ring" and plan.deg.windows > 1
    kv = next(m.nbytes for m in plan.messages if m.op == "p2p" and m.phase == "fwd")
    dkv = kv * acc_bytes(plan.shape.dtype.itemsize) / plan.shape.dtype.itemsize
    per_hop = kv + (dkv if phase == "bwd" else 0.0)
    inner = links.ring_hops(plan, cluster, per_hop, "inner" if double else "ring")
    outer = links.ring_hops(plan, cluster, per_hop, "outer") if double else inner
    hops = ring_hops_layout(r, plan.deg.windows if double else 1, inner, outer)
    end = ring_time(compute, hops)
    if phase == "bwd":  # the last dK/dV hop hands the gradient to its owner after the last step
        end = end + links.ring_hops(plan, cluster, dkv, "outer" if double else "ring")
    return a2a + float(end.max())


def predict(
    plan: CellPlan,
    cluster: ClusterModel,
    fits: dict[str, KernelFit],
    kernel: str,
    mode: str,
    whole: CallWork,
    emulated: bool = False,
) -> Prediction:
    """fits: phase (fwd, bwd) -> the step kernel's fit; whole: the kernel's work on the whole
    mask (kernel_fit.mask_work, for the ideal)."""
    comp = {p: step_compute(plan, fits[p], kernel, p, cluster) for p in PHASES[mode]}
    per_member = sum(c.sum(axis=1) for c in comp.values())
    compute_max, compute_mean = float(per_member.max()), float(per_member.mean())
    if emulated:  # cp.emulate: every rank's compute one after another, communication counted only
        total = compute_max
    else:
        total = sum(phase_time(plan, comp[p], cluster, p) for p in PHASES[mode])
    ideal = ideal_s(plan, fits, kernel, mode, whole)
    losses = {
        "exposed communication": total - compute_max,
        "compute imbalance": compute_max - compute_mean,
        "step-kernel efficiency": compute_mean - ideal,
    }
    s = plan.shape
    flops = attention_flops(plan.mask_area, s.heads_q, s.head_dim, s.batch, mode)
    return Prediction(
        strategy=plan.strategy,
        shard=plan.shard,
        degrees={"ulysses": plan.deg.ulysses, "ring": plan.deg.ring, "windows": plan.deg.windows},
        world=plan.world,
        mode=mode,
        time_ms=total * 1e3,
        tflops_per_gpu=flops / (total * plan.world) / 1e12,
        compute_ms=compute_max * 1e3,
        mean_compute_ms=compute_mean * 1e3,
        ideal_ms=ideal * 1e3,
        exposed_comm_ms=(total - compute_max) * 1e3,
        bottleneck=max(losses, key=losses.get),
        emulated=emulated,
    )
