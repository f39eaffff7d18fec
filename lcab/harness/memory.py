"""Will a cell fit? Its peak memory, estimated and compared with the device's free memory before
anything is allocated, so a cell that cannot fit becomes an `oom` row at once instead of being
killed by the OS (CPU: the OOM killer takes the whole sweep) or failing half-way (CUDA).

The estimate of one cell is
  tensors  q, k, v, dout (and the fp32 draw each comes from), out, and dq, dk, dv outside fwd
  mask     the host-side row intervals (numpy, O(S)) that mask forms are derived from
  + max(kernel, verify)
           kernel: what the kernel allocates beyond the tensors (Kernel.working_set, declared
           per adapter: materialised scores O(Hq S^2) for eager/math/uncompiled-flex, O(S)
           for tiled kernels); verify (bench.verify): the dense boolean mask plus the larger of
           the kernel and the eager fp64 reference (lcab.harness.verify), which run in turn.
The factors below are measured peaks (resident set, torch 2.13 CPU, S = 2K..3K, fp32) with a
margin, and tests/test_feasibility.py measures real cells against the estimate. So `oom` from
here means "would not fit"; a cell that passes can still fail to allocate (fragmentation,
other processes growing) and is then recorded as oom by lcab.results.outcome.classify.
"""

from __future__ import annotations

import dataclasses
import os
import resource
from dataclasses import dataclass

import torch

from lcab.kernels.base import ShapeSpec
from lcab.masks.slices import AttnMask

# Score-sized tensors ([B, Hq, S_q, S_k]) alive at the peak of one step, per mode. Measured:
# torch eager 3.2 (fwd), 6.0 (fwd_bwd), 8.0 (bwd: the graph is retained); SDPA math 2.6 / 3.1 /
# 3.1; uncompiled flex forward 3.2 (S=1.5K) to 5.2 (S=2K, code pages of a first call included).
EAGER = {"fwd": 4.0, "fwd_bwd": 7.0, "bwd": 9.0}
MATH = {"fwd": 3.5, "fwd_bwd": 4.0, "bwd": 4.0}
FLEX_UNFUSED = {"fwd": 5.0, "fwd_bwd": 12.0, "bwd": 12.0}  # backward: CUDA uncompiled, not measured
# A kernel that declares nothing: the most any measured materialising kernel keeps.
CONSERVATIVE = {m: max(EAGER[m], FLEX_UNFUSED[m]) for m in EAGER}
# numpy bytes per row interval while AttnMask.row_intervals is built (measured 124 at S = 1M).
MASK_ROW_BYTES = 128


def elem(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def scores(shape: ShapeSpec, seqlen_q: int, seqlen_k: int, nbytes: int | None = None) -> int:
    """One [B, Hq, S_q, S_k] tensor; materialising kernels compute in at least fp32."""
    nbytes = nbytes or max(elem(shape.dtype), 4)
    return shape.batch * shape.heads_q * seqlen_q * seqlen_k * nbytes


def dense_mask(seqlen_q: int, seqlen_k: int) -> int:
    """AttnMask.dense(): the boolean result and, while it is built, three more of its size."""
    return 4 * seqlen_q * seqlen_k


def materialised(
    mask: AttnMask, shape: ShapeSpec, mode: str, factors: dict[str, float], with_mask: bool = True
) -> int:
    """A kernel that materialises the scores: `factors[mode]` score tensors (+ the dense mask)."""
    sq, sk = mask.seqlen_q, mask.seqlen_k
    return int(factors[mode] * scores(shape, sq, sk)) + (dense_mask(sq, sk) if with_mask else 0)


def tiled(mask: AttnMask, shape: ShapeSpec) -> int:
    """A flash-like kernel: O(S). Per query/key row and q head: an fp32 dq accumulator, K/V and
    their gradients replicated to Hq heads where GQA is not native, LSE and delta."""
    rows = shape.batch * shape.heads_q * max(mask.seqlen_q, mask.seqlen_k)
    return rows * (shape.head_dim * (4 + 4 * elem(shape.dtype)) + 16)


def step_tensors(shape: ShapeSpec, seqlen_q: int, seqlen_k: int, mode: str) -> int:
    """q, k, v, dout, out, the gradients outside fwd, and the fp32 draw of the largest input."""
    b, d, e = shape.batch, shape.head_dim, elem(shape.dtype)
    q_like = b * seqlen_q * shape.heads_q * d * e  # q, dout, out (+ dq)
    kv_like = b * seqlen_k * shape.heads_kv * d * e  # k, v (+ dk, dv)
    grads = 1 if mode != "fwd" else 0
    draw = b * max(seqlen_q, seqlen_k) * shape.heads_q * d * 4
    return (3 + grads) * q_like + 2 * (1 + grads) * kv_like + draw


def mask_rows(mask: AttnMask | None, seqlen: int) -> int:
    """Building the row intervals (every mask form is derived from them); before the mask
    exists, the least it can take: one interval per row."""
    rows = seqlen if mask is None else max(seqlen, sum(s.rows for s in mask.slices))
    return MASK_ROW_BYTES * rows


def reference(shape: ShapeSpec, seqlen_q: int, seqlen_k: int, backward: bool) -> int:
    """lcab.harness.verify.reference: eager attention in fp64 over head groups sized by its
    budget (at least one KV head's query heads at a time), then the same in the kernel's dtype."""
    from lcab.harness.verify import _REF_BYTES

    per_kv = shape.heads_q // shape.heads_kv
    one = seqlen_q * seqlen_k * 8 * per_kv * shape.batch
    groups = max(1, min(shape.heads_kv, _REF_BYTES // max(1, one)))
    group = ShapeSpec(shape.batch, groups * per_kv, groups, shape.head_dim, torch.float64, shape.device)
    factor = EAGER["fwd_bwd" if backward else "fwd"]
    # The fp64 and the same-dtype results are kept for the comparison.
    outputs = 2 * step_tensors(dataclasses.replace(shape, dtype=torch.float64), seqlen_q, seqlen_k, "fwd_bwd")
    return int(factor * scores(group, seqlen_q, seqlen_k, 8)) + outputs


@dataclass(frozen=True)
class Footprint:
    """Estimated bytes of one cell, by part (see the module docstring)."""

    tensors: int
    mask: int
    kernel: int = 0
    verify: int = 0

    @property
    def total(self) -> int:
        return self.tensors + self.mask + max(self.kernel, self.verify)

    def parts(self) -> str:
        named = (
            ("tensors", self.tensors),
            ("mask", self.mask),
            ("kernel", self.kernel),
            ("verify", self.verify),
        )
        return ", ".join(f"{k} {size(v)}" for k, v in named if v)


def before_mask(shape: ShapeSpec, seqlen: int, mode: str, extra: int = 0) -> Footprint:
    """What the cell needs whatever its mask and kernel: checked before the mask is built."""
    return Footprint(tensors=step_tensors(shape, seqlen, seqlen, mode) + extra, mask=mask_rows(None, seqlen))


def estimate(kernel, mask: AttnMask, shape: ShapeSpec, mode: str, verify: bool, extra: int = 0) -> Footprint:
    """The cell's footprint; `kernel.working_set` raises Unsupported for a mask it cannot take."""
    sq, sk = mask.seqlen_q, mask.seqlen_k
    work = kernel.working_set(mask, shape, mode)
    ref = dense_mask(sq, sk) + max(work, reference(shape, sq, sk, mode != "fwd")) if verify else 0
    return Footprint(
        tensors=step_tensors(shape, sq, sk, mode) + extra,
        mask=mask_rows(mask, sq),
        kernel=work,
        verify=ref,
    )


@dataclass(frozen=True)
class Free:
    bytes: int
    source: str  # which limit is the tightest


def _kib_field(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def free_memory(device: torch.device) -> Free:
    """CUDA: free device memory plus what torch's cache holds unused. CPU: the tightest of
    MemAvailable, the cgroup's limit (what the OOM killer of a container enforces) and this
    process's address-space limit (ulimit -v)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return Free(free + cached, f"{device} free")
    found: list[Free] = []
    avail = _kib_field("/proc/meminfo", "MemAvailable")
    if avail is not None:
        found.append(Free(avail, "MemAvailable"))
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        found.append(Free(max(0, limit - used), "cgroup memory.max"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    vm = _kib_field(f"/proc/{os.getpid()}/status", "VmSize")
    if soft != resource.RLIM_INFINITY and vm is not None:
        found.append(Free(max(0, soft - vm), "ulimit -v"))
    return min(found, key=lambda f: f.bytes) if found else Free(2**62, "unknown")


class WontFit(MemoryError):
    """The estimate is above the free memory; a MemoryError, so the cell is recorded as oom."""


def check(fp: Footprint, device: torch.device) -> None:
    free = free_memory(device)
    if fp.total > free.bytes:
        raise WontFit(
            f"needs ~{size(fp.total)}, {size(free.bytes)} free ({free.source}); "
            f"estimated, nothing allocated: {fp.parts()}"
        )


def size(nbytes: float) -> str:
    """Bytes in GiB with 3 significant digits, or a larger unit past 1000 GiB."""
    value, unit = nbytes / 2**30, "GiB"
    for bigger in ("TiB", "PiB", "EiB"):
        if value < 1000:
            break
        value, unit = value / 1024, bigger
    return f"{value:.3g} {unit}"
