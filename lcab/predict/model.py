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
    merge = merge_bytes(plan, phase) / (cluster.hbm_gbps * 1e9 * HBM_EFFICIENCY)
    return kern + merge


def merge_bytes(plan: CellPlan, phase: str) -> np.ndarray:
    """[members, steps] HBM bytes of combining the steps' results, as lcab.cp.merge does it: a
    member's first step over every row is kept as it came (nothing); a later step merges over the
    rows it reaches, straight into the first result when it is the rows' last (read both, write
    one: 3 bytes per element of the dtype) or through the fp32 region (cast in, merge, cast out);
    backward: dQ the same way as a sum (RowSum), and each step's dK/dV copied into an fp32 part.
    ring_allgather's calls on disjoint query runs are written once into one buffer."""
    el, acc = plan.shape.dtype.itemsize, acc_bytes(plan.shape.dtype.itemsize)
    h = plan.shape.head_dim * plan.shape.batch
    q_el = plan.rows * plan.heads_q * h  # elements of the rows each step reaches
    busy = plan.area > 0
    if plan.strategy == "ring_allgather":  # one step; its calls' rows are disjoint
        out = plan.q_rows * plan.heads_q * h * 2 * el * (plan.calls > 0)
        return out if phase == "fwd" else np.zeros_like(out)
    steps = plan.area.shape[1]
    last = busy & (np.cumsum(busy[:, ::-1], axis=1)[:, ::-1] == 1)  # each member's last busy step
    first = np.zeros_like(busy)
    first[:, 0] = busy[:, 0] & (plan.rows[:, 0] >= plan.q_rows)
    later = busy & ~first
    if phase == "fwd":
        per = np.where(last, 3 * el, 3 * acc + 2 * el)
        return q_el * per * later
    dq = q_el * (3 * acc + 2 * el) * later
    dkv = 2 * plan.k_rows * plan.heads_kv * h * (acc + el) * busy * (steps > 1)
    return dq + dkv


def ideal_s(plan: CellPlan, fits: dict[str, KernelFit], kernel: str, mode: str, whole: CallWork) -> float:
    s = plan.shape
    return sum(fits[p].seconds(whole, s.heads_q, s.head_dim, s.batch) for p in PHASES[mode]) / plan.world


def _sent(plan: CellPlan, phase: str, dim: str) -> float:
    """Bytes of one call of each kind on `dim` in `phase`, summed over kinds (per call)."""
    return sum(m.nbytes for m in plan.messages if m.phase == phase and m.dim == dim and m.calls)


def layout_bytes(plan: CellPlan, phase: str) -> float:
    """HBM bytes one rank moves outside its kernel steps (read + write), as lcab's code does it:
    the K/V stack of TiledLseAttention and its backward's dK/dV casts, Ulysses' send-buffer and
    own-head copies, landing and token reorders, ring_allgather's gathered-key reorder, its dQ over
    cut calls and its fp32 dK/dV zero-fill, scatter and casts. Serial with the steps."""
    s = plan.shape
    el, acc = s.dtype.itemsize, acc_bytes(s.dtype.itemsize)
    h = s.head_dim * s.batch
    q = plan.q_rows * plan.heads_q * h  # elements of the step query buffer
    kv = plan.q_rows * plan.heads_kv * h  # one of K, V in the step buffer (before any gather)
    fwd = phase == "fwd"
    if plan.strategy == "ring_allgather":
        g = plan.seqlen * plan.heads_kv * h  # one of the gathered K, V
        if fwd:  # stack, reorder of the gathered keys
            return 2 * kv * 2 * el + 2 * g * 2 * el
        # dq over the cut calls (RowSum region), dK/dV zero-fill, scatter, contiguous, casts
        return q * (3 * acc + 2 * el) + 2 * g * acc * 6 + 2 * kv * (acc + el)
    u = plan.deg.ulysses
    n = 0.0
    if u > 1:  # q, k, v in, out back: one copy each before and one landing after the exchange
        n += (2 * q + 2 * kv) * 2 * el
    if plan.strategy == "ulysses" or (plan.strategy == "usp" and plan.deg.ring == 1):
        if plan.mask_name != "full":  # tokens reordered to global order and back (q, k, v, out)
            n += (2 * q + 2 * kv) * 2 * el
        return n
    n += 2 * kv * 2 * el  # torch.stack([k, v])
    return n if fwd else n + 2 * kv * (acc + el)


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
