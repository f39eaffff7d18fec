"""Run one cell on this process's device and turn whatever happens into a Result."""

from __future__ import annotations

import datetime as dt
import traceback
from collections.abc import Callable

import torch

from lcab.config import ConfigError, MaskConfig
from lcab.harness import memory
from lcab.harness.inputs import inputs_for
from lcab.harness.step import training_step
from lcab.harness.throughput import throughput_metrics
from lcab.harness.timing import Schedule, measure
from lcab.harness.verify import verify
from lcab.kernels import base as kernels
from lcab.kernels.base import DTYPE_NAMES, ShapeSpec, Unavailable, Unsupported
from lcab.masks import build as build_mask
from lcab.plan import Cell
from lcab.results.env import environment
from lcab.results.schema import Result, Status


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# How allocators say "out of memory": CUDA's caching allocator, and torch's CPU allocator
# ("DefaultCPUAllocator: can't allocate memory: ... Error code 12", "not enough memory").
_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def classify(exc: BaseException) -> tuple[Status, str]:
    """Map an exception from a cell to its recorded status and a one-line reason."""
    if isinstance(exc, Unsupported):
        return Status.UNSUPPORTED, str(exc)
    if isinstance(exc, Unavailable):
        return Status.UNAVAILABLE, str(exc)
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or any(
        m in str(exc).lower() for m in _OOM_TEXT
    ):
        return Status.OOM, str(exc).splitlines()[0][:300] if str(exc) else "out of memory"
    if isinstance(exc, ConfigError):
        return Status.ERROR, str(exc)
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else ""
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return Status.ERROR, f"{type(exc).__name__}: {first}{where}"


def shape_spec(cell: Cell, device: torch.device) -> ShapeSpec:
    s = cell.config["shape"]
    return ShapeSpec(
        batch=s["batch"],
        heads_q=s["heads_q"],
        heads_kv=s["heads_kv"],
        head_dim=s["head_dim"],
        dtype=DTYPE_NAMES[s["dtype"]],
        device=device,
    )


def execute(cell: Cell) -> Result:
    """Single-device path (cp=none). Every outcome, including a crash, becomes a Result."""
    return run_on_device(cell, _measure)


def run_on_device(cell: Cell, measure: Callable[[Cell, kernels.Kernel, torch.device], dict]) -> Result:
    """Resolve the cell's kernel, run `measure` on this process's device, record any outcome."""
    c = cell.config
    device = torch.device(c["bench"]["device"])
    res = Result(cell_id=cell.cell_id, status=Status.ERROR.value, config=c, started_at=now())
    kernel = None
    try:
        kernel = kernels.get(c["kernel"]["name"])
        kernel.configure(**{k: v for k, v in c["kernel"].items() if k != "name"})
        res.env = environment(device, kernel.versions())
        res.metrics = measure(cell, kernel, device)
        res.status, res.reason = judge(res.metrics)
    except KeyError as exc:
        res.status, res.reason = Status.ERROR.value, str(exc).strip("'\"")
    except Exception as exc:
        status, res.reason = classify(exc)
        res.status = status.value
    finally:
        if not res.env:
            res.env = environment(device, kernel.versions() if kernel else {})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    res.finished_at = now()
    return res


def _measure(cell: Cell, kernel: kernels.Kernel, device: torch.device) -> dict:
    c = cell.config
    ok, why = kernel.available(device)
    if not ok:
        raise Unavailable(why)
    mode = c["bench"]["mode"]
    if mode != "fwd" and not kernel.has_backward(device.type):
        raise Unsupported(f"{kernel.name} has no backward on {device.type}")
    spec = shape_spec(cell, device)
    # What cannot fit is decided before it is allocated (lcab.harness.memory): first what every
    # mask needs, then, with the mask built, the kernel's declared working set and verify's.
    b = c["bench"]
    flush = b["l2_flush_mb"] * 2**20 if b["l2_flush"] and device.type == "cuda" else 0
    memory.check(memory.before_mask(spec, c["seqlen"], mode, flush), device)
    mask = build_mask(MaskConfig(**c["mask"]), c["seqlen"])
    kernel.check(mask, spec)
    memory.check(memory.estimate(kernel, mask, spec, mode, b["verify"], flush), device)
    fn = kernel.prepare(mask, spec)  # mask-dependent preparation stays outside the timing
    inputs = inputs_for(spec, mask, c["bench"]["seed"])
    metrics: dict = {"area": mask.area, "density": mask.density, "n_slices": len(mask.slices)}
    if mask.doc_lens is not None:
        metrics["n_docs"] = len(mask.doc_lens)
    metrics.update(getattr(fn, "notes", {}))
    if c["bench"]["verify"]:
        verdict = verify(fn, inputs, mask.dense(device), backward=mode != "fwd")
        metrics.update({f"err_{k}": v for k, v in verdict.errors.items()})
        metrics.update({f"err_ratio_{k}": v for k, v in verdict.ratios.items()})
        metrics["verify_passed"] = verdict.passed
        metrics["verify_failures"] = verdict.failures()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base_mem = torch.cuda.memory_allocated(device)
    step = training_step(fn, inputs, mode)
    timing = measure(step, device, Schedule.from_bench(b), b["l2_flush_mb"] if b["l2_flush"] else 0)
    metrics.update(timing.summary())
    metrics["times_ms"] = list(timing.times_ms)
    if device.type == "cuda":
        metrics["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        metrics["step_mem_gib"] = (torch.cuda.max_memory_allocated(device) - base_mem) / 2**30
    metrics.update(
        throughput_metrics(
            mask.area,
            spec.heads_q,
            spec.head_dim,
            spec.batch,
            mode,
            timing.p50,
            1,
            c["shape"]["dtype"],
            device,
        )
    )
    return metrics


def judge(metrics: dict) -> tuple[str, str]:
    """ok, or invalid when numerics failed or the per-device throughput is above the peak."""
    if metrics.get("verify_passed") is False:
        return Status.INVALID.value, "numerics: " + "; ".join(metrics["verify_failures"])
    peak = metrics.get("peak_tflops")
    if peak and metrics["tflops"] > peak:
        return (
            Status.INVALID.value,
            f"{metrics['tflops']:.1f} TFLOPs/s per device is above its peak {peak:.0f}",
        )
    return Status.OK.value, ""
