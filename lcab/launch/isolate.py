"""A cell in a child process with a wall-clock limit (bench.timeout_s > 0).

The child leads its own process group, so a cell that overruns is killed with everything it
started (local CP workers included), whatever it is blocked in: a kernel, a collective, a
hung compile. The limit counts from the moment the child has imported lcab and is about to
run the cell, so interpreter start-up is not charged to the cell. The measurement itself
happens in the child exactly as it would in the parent.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

from lcab.execute import now
from lcab.plan import Cell
from lcab.results.schema import Result, Status

_START_LIMIT_S = 300.0  # interpreter + torch import in the child; generous for slow file systems


def _child(cell: Cell, conn) -> None:  # runs in the spawned process
    os.setpgrp()
    from lcab.launch import run_cell

    conn.send(("started", None))
    try:
        result = run_cell(cell)
        conn.send(("result", result))
    except BaseException as exc:
        conn.send(("crash", f"{type(exc).__name__}: {exc}"))
        raise


def _kill_group(proc: mp.process.BaseProcess) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.join(10)


def run_with_timeout(cell: Cell, timeout_s: float) -> Result:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(cell, child), name=f"lcab-cell-{cell.cell_id}")
    started = now()
    proc.start()
    child.close()

    def failed(status: Status, reason: str) -> Result:
        return Result(
            cell_id=cell.cell_id,
            status=status.value,
            reason=reason,
            config=cell.config,
            started_at=started,
            finished_at=now(),
        )

    try:
        for limit in (_START_LIMIT_S, timeout_s):
            if not parent.poll(limit):
                _kill_group(proc)
                if limit == timeout_s:
                    return failed(Status.ERROR, f"timeout after {timeout_s:g} s")
                return failed(Status.ERROR, f"cell process did not start within {limit:g} s")
            kind, payload = parent.recv()
            if kind == "result":
                return payload
            if kind == "crash":
                return failed(Status.ERROR, f"cell process crashed: {payload}")
    except EOFError:
        proc.join(10)
        return failed(Status.ERROR, f"cell process died (exit code {proc.exitcode})")
    finally:
        if proc.is_alive():
            proc.join(10)
            if proc.is_alive():
                _kill_group(proc)
    return failed(Status.ERROR, "cell process sent no result")


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
