"""Append-only JSONL results store: one writer, one line per row, flushed and fsynced.

A row is written with a single write() of a complete line under an exclusive lock, so a
killed process leaves at most a truncated last line, which readers skip.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from lcab.results.schema import Result, Status


class ResultStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, result: Result) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(result.to_dict(), default=str, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    continue  # a row cut off by a kill
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def latest(self) -> dict[str, dict]:
        """Newest row per cell id."""
        return {r["cell_id"]: r for r in self.rows()}

    def done(self, cell_id: str, rerun_failed: bool) -> bool:
        """Whether a resumed sweep may skip this cell."""
        row = self.latest().get(cell_id)
        if row is None:
            return False
        if row["status"] == Status.OK.value:
            return True
        # unsupported/unavailable are facts about the cell, and so is oom on this machine (table
        # mark E): skip unless asked. error reruns (often transient); interrupted always reruns.
        settled = (Status.UNSUPPORTED.value, Status.UNAVAILABLE.value, Status.OOM.value)
        return row["status"] in settled and not rerun_failed
