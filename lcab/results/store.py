"""Append-only JSONL results store: one writer, one line per row, flushed and fsynced.

A row is written with a single write() of a complete line under an exclusive lock, so a
killed process leaves at most a truncated last line. The next append starts on a fresh line,
so that fragment stays one bad line on its own, and every reader skips bad lines (`parse_line`).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from lcab.config import ConfigError
from lcab.results.schema import Result, Status

_STATUS_INDEX: dict[str, tuple[int, dict[str, str]]] = {}  # path -> (bytes read, status per cell)
_WRITABLE: set[str] = set()  # stores already checked in this process


def parse_line(line: bytes | str) -> dict | None:
    """A row from one complete line, or None for anything that is not one (a fragment left by a
    kill, garbage, JSON that is not a row object)."""
    try:
        row = json.loads(line)
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        return None
    if not isinstance(row, dict):
        return None
    if not isinstance(row.get("cell_id"), str) or not isinstance(row.get("status"), str):
        return None
    if any(not isinstance(row.get(k, {}), dict) for k in ("config", "env", "metrics")):
        return None
    return row


def iter_rows(path: str | Path) -> Iterator[tuple[dict | None, bytes]]:
    """(row or None, raw line) per complete line; a last line without its newline is still being
    written (or was cut by a kill) and is not yielded."""
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return
            if line.strip():
                yield parse_line(line), line


def read_rows(path: str | Path) -> list[dict]:
    """Every valid row of a store, in file order; none if it does not exist. The one reader that
    the store, the report, the sweep summary and the tests use."""
    if not Path(path).is_file():
        return []
    return [row for row, _ in iter_rows(path) if row is not None]


def bad_lines(path: str | Path) -> int:
    """How many complete lines of a store are not rows (what `read_rows` skipped)."""
    if not Path(path).is_file():
        return 0
    return sum(row is None for row, _ in iter_rows(path))


class ResultStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def check_writable(self) -> None:
        """Raises ConfigError (one line) when rows cannot be appended here: asked before the
        first cell runs, so no measurement is made only to be lost."""
        key = os.path.abspath(self.path)
        if key in _WRITABLE:
            return
        if self.path.is_dir():
            raise ConfigError(
                f"store={self.path} is a directory; give a file path such as {self.path}/results.jsonl"
            )
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"store={self.path} is not a regular file")
        above = next((p for p in self.path.absolute().parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise ConfigError(f"store={self.path} cannot be written: {above} is a file, not a folder")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8"):
                pass  # opening for append writes nothing (and creates an empty store)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != self.path else ""
            raise ConfigError(f"store={self.path} cannot be written: {exc.strerror or exc}{where}") from None
        _WRITABLE.add(key)

    def append(self, result: Result) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(result.to_dict(), default=str, allow_nan=True) + "\n"
        with open(self.path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                # A writer killed mid-row left a fragment without its newline: end it, or this
                # row would be glued onto it and both lost.
                size = f.seek(0, os.SEEK_END)
                if size:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        line = "\n" + line
                f.write(line.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def rows(self) -> list[dict]:
        return read_rows(self.path)

    def latest(self) -> dict[str, dict]:
        """Newest row per cell id."""
        return {r["cell_id"]: r for r in self.rows()}

    def statuses(self) -> dict[str, str]:
        """Newest status per cell id. Read incrementally: a sweep asks before every cell, and
        re-reading a store of thousands of rows each time would cost seconds per hundred cells.
        The store only grows; if it shrank (replaced), it is read again from the start."""
        key = str(self.path.resolve())
        offset, seen = _STATUS_INDEX.get(key, (0, {}))
        size = self.path.stat().st_size if self.path.is_file() else 0
        if size < offset:
            offset, seen = 0, {}
        if size > offset:
            with open(self.path, "rb") as f:
                f.seek(offset)
                chunk = f.read(size - offset)
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a cut-off last line waits for its end
            for line in complete.splitlines():
                row = parse_line(line) if line.strip() else None
                if row is not None:
                    seen[row["cell_id"]] = row["status"]
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
