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

_STATUS_INDEX: dict[str, tuple[int, dict[str, str]]] = {}  # path -> (bytes read, status per cell)


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

    def statuses(self) -> dict[str, str]:
        """Newest status per cell id. Read incrementally: a sweep asks before every cell, and
        re-reading a store of thousands of rows each time would cost seconds per hundred cells.
        The store only grows; if it shrank (replaced), it is read again from the start."""
        key = str(self.path.resolve())
        offset, seen = _STATUS_INDEX.get(key, (0, {}))
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < offset:
            offset, seen = 0, {}
        if size > offset:
            with open(self.path, "rb") as f:
                f.seek(offset)
                chunk = f.read(size - offset)
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a cut-off last line waits for its end
            for line in complete.splitlines():
                try:
                    row = json.loads(line)
                    seen[row["cell_id"]] = row["status"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
            offset += len(complete)
        _STATUS_INDEX[key] = (offset, seen)
        return seen

    def done(self, cell_id: str, rerun_failed: bool) -> bool:
        """Whether a resumed sweep may skip this cell."""
        status = self.statuses().get(cell_id)
        if status is None:
            return False
        if status == Status.OK.value:
            return True
        # unsupported/unavailable are facts about the cell, and so is oom on this machine (table
        # mark E): skip unless asked. error reruns (often transient); interrupted always reruns.
        settled = (Status.UNSUPPORTED.value, Status.UNAVAILABLE.value, Status.OOM.value)
        return status in settled and not rerun_failed
