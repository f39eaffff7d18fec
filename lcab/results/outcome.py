"""A cell's outcome as a row: the status an exception maps to, the judgement of its metrics, and
the one factory every path (single device, CP ranks, emulation, launcher, run loop) makes its
Result with."""

from __future__ import annotations

import datetime as dt
import traceback
from typing import TYPE_CHECKING

import torch

from lcab.errors import ConfigError, Unavailable, Unsupported
from lcab.results.env import environment
from lcab.results.schema import Result, Status

if TYPE_CHECKING:
    from lcab.plan import Cell

# How allocators say "out of memory": CUDA's caching allocator, and torch's CPU allocator
# ("DefaultCPUAllocator: can't allocate memory: ... Error code 12", "not enough memory").
_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


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


def result_row(
    cell: Cell,
    status: Status | str,
    reason: str = "",
    *,
    metrics: dict | None = None,
    device: torch.device | None = None,
    versions: dict | None = None,
    started_at: str = "",
    sweep: str = "",
    config: dict | None = None,
) -> Result:
    """The row of `cell`, finished now. With a device, its environment (and the kernel's package
    versions) is recorded; `config` replaces the cell's (a config that failed to resolve)."""
    return Result(
        cell_id=cell.cell_id,
        status=Status(status).value,
        reason=reason,
        config=cell.config if config is None else config,
        env=environment(device, versions or {}) if device is not None else {},
        metrics=metrics or {},
        sweep=sweep,
        started_at=started_at,
        finished_at=now(),
    )
