"""Cells in a child process: with a wall-clock limit (bench.timeout_s > 0), or without one for
cells that may run long, so that a stop signal ends them at once (lcab.launch.placement).

One child serves cell after cell of a sweep, so a sweep pays interpreter start-up, CUDA
context creation and torch.compile caches once, not per cell (about 2 s per cell on a 2-core
CPU). The child leads its own process group; a cell that overruns is killed with everything
it started (local CP workers included), whatever it is blocked in: a kernel, a collective, a
hung compile; the next cell gets a fresh child. The limit counts from the moment the cell is
handed to a child that has imported lcab, so start-up is not charged to the cell. The
measurement itself happens in the child exactly as it would in the parent.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import signal
from multiprocessing.connection import Connection

from lcab.plan import Cell
from lcab.results.outcome import now, result_row
from lcab.results.schema import Result, Status

_START_LIMIT_S = 300.0  # interpreter + torch import in the child; generous for slow file systems


def _serve(conn: Connection) -> None:  # runs in the spawned process
    os.setpgrp()
    from lcab.launch import run_cell

    conn.send(("ready", None))
    while True:
        try:
            cell = conn.recv()
        except EOFError:
            return
        if cell is None:
            return
        try:
            result = run_cell(cell)
        except BaseException as exc:
            conn.send(("crash", f"{type(exc).__name__}: {exc}"))
            raise
        conn.send(("result", result))


class _Child:
    """The serving child process and its end of the pipe."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child_end = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_serve, args=(child_end,), name="lcab-cells")
        self.proc.start()
        child_end.close()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        except (ProcessLookupError, PermissionError):
            self.proc.kill()
        self.proc.join(10)
        self.conn.close()

    def close(self) -> None:
        """Ask an idle child to leave; kill it if it does not."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.kill()


_child: _Child | None = None


def _discard() -> None:
    global _child
    if _child is not None:
        _child.kill()
        _child = None


@atexit.register
def shutdown() -> None:
    global _child
    if _child is not None:
        _child.close()
        _child = None


def run_with_timeout(cell: Cell, timeout_s: float | None) -> Result:
    """Run the cell in the serving child; None waits without a limit. While this process waits
    (Connection.poll), a stop signal's handler runs at once; whatever it raises kills the child's
    process group before it propagates."""
    global _child
    started = now()

    def failed(status: Status, reason: str) -> Result:
        return result_row(cell, status, reason, started_at=started)

    try:
        if _child is None:
            _child = _Child()
            if not _child.conn.poll(_START_LIMIT_S):
                _discard()
                return failed(Status.ERROR, f"cell process did not start within {_START_LIMIT_S:g} s")
            _child.conn.recv()  # "ready"
        _child.conn.send(cell)
        if not _child.conn.poll(timeout_s):
            _discard()
            return failed(Status.ERROR, f"timeout after {timeout_s:g} s")
        kind, payload = _child.conn.recv()
    except (EOFError, OSError):
        if _child is not None:
            _child.proc.join(5)  # the pipe closes as it dies: reap it for its exit code
        code = _child.proc.exitcode if _child is not None else None
        _discard()
        if code == -signal.SIGKILL:  # nobody here sent it
            return failed(Status.ERROR, "cell process killed by SIGKILL (the OS's out-of-memory killer?)")
        return failed(Status.ERROR, f"cell process died (exit code {code})")
    except BaseException:
        _discard()  # interrupted mid-cell: the child's state is unknown
        raise
    if kind == "crash":
        _discard()
        return failed(Status.ERROR, f"cell process crashed: {payload}")
    return payload


class Deadline:
    """The per-cell limit inside a distributed job (torchrun, Slurm), where a cell cannot be
    moved to a child process: every rank keeps its own timer; when it fires, `on_timeout` runs
    (rank 0 records the row) and the process exits with 124. A rank stuck in a collective cannot
    be unwound safely and its process group is unusable afterwards, so the job ends with a clear
    error instead of hanging; rerunning the sweep resumes after the recorded cell."""

    def __init__(self, timeout_s: float, on_timeout) -> None:
        import threading

        self._timer = threading.Timer(timeout_s, self._fire, args=(on_timeout,))
        self._timer.daemon = True

    @staticmethod
    def _fire(on_timeout) -> None:
        try:
            on_timeout()
        finally:
            os._exit(124)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
