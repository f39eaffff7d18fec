"""The result row: one per cell, whatever happened to it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Status(str, Enum):
    OK = "ok"
    UNSUPPORTED = "unsupported"  # the kernel/strategy cannot express this cell (table mark X)
    UNAVAILABLE = "unavailable"  # package or device support missing (table mark -)
    OOM = "oom"  # out of memory (table mark E)
    ERROR = "error"  # bad input or a crash, with the reason
    INVALID = "invalid"  # ran, but a number is impossible (above peak) or numerics failed
    INTERRUPTED = "interrupted"  # SIGTERM / preemption while running


@dataclass
class Result:
    cell_id: str
    status: str
    reason: str = ""
    config: dict = field(default_factory=dict)  # the resolved config of the cell
    env: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    sweep: str = ""
    started_at: str = ""
    finished_at: str = ""
    # Hydra overrides (lcab/results/overrides.py), the report's commands: the job's, after the
    # sweep's expansion (`seqlen=512`), and its sweep's as typed (`-m seqlen=256,512`).
    overrides: list[str] = field(default_factory=list)
    sweep_overrides: list[str] = field(default_factory=list)
    schema: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = Status(self.status).value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Result:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
