"""Stop signals during a cell: record the running cell as interrupted, then leave.

SIGTERM (scancel, torchrun's shutdown, a preempting scheduler), SIGINT (Ctrl-C) and the
scheduler's preemption signal (submitit: SIGUSR2, or $SUBMITIT_PREEMPT_SIGNAL) end the
sweep. The handler writes the `interrupted` row first, from inside the handler, so that the
row exists even if unwinding the cell hangs; it then stops local worker processes and
raises `Interrupted`, a BaseException, so no `except Exception` in a cell swallows it.
After unwinding, `Interrupted.forward()` hands the signal to whoever had it before (submitit
checkpoints and requeues the job on its preemption signal) and exits.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def preempt_signal() -> int:
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return int(getattr(signal, name if name.startswith("SIG") else f"SIG{name}", signal.SIGUSR2))


def stop_signals() -> tuple[int, ...]:
    return (signal.SIGTERM, signal.SIGINT, preempt_signal())


class Interrupted(BaseException):
    def __init__(self, signum: int, previous: object) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.previous = previous

    def forward(self) -> None:
        """Give the signal to its previous owner (e.g. submitit's requeue), then exit."""
        prev = self.previous
        if callable(prev) and prev is not signal.default_int_handler:
            prev(self.signum, None)
        if self.signum == preempt_signal() and int(os.environ.get("RANK", "0")) != 0:
            # Preempted, not failed: a non-zero exit would make srun (kill-on-bad-exit) kill
            # rank 0 before it has recorded the cell and requeued the job.
            sys.exit(0)
        sys.exit(128 + self.signum)


@contextmanager
def interruptible(on_stop: Callable[[int], None]) -> Iterator[None]:
    """While the block runs, a stop signal calls on_stop(signum) once and raises Interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    fired: list[int] = []
    previous: dict[int, object] = {}

    def handler(signum: int, frame: object) -> None:
        if fired:
            return  # a second signal while unwinding: the first one is being handled
        fired.append(signum)
        try:
            on_stop(signum)
        finally:
            stop_children()
        raise Interrupted(signum, previous.get(signum))

    for s in stop_signals():
        previous[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, prev in previous.items():
            signal.signal(s, prev if prev is not None else signal.SIG_DFL)  # type: ignore[arg-type]


def stop_children(sig: int = signal.SIGTERM) -> None:
    """Signal this process's multiprocessing children, and the process group of those that lead one."""
    for child in multiprocessing.active_children():
        try:
            if child.pid and os.getpgid(child.pid) == child.pid:
                os.killpg(child.pid, sig)
            else:
                os.kill(child.pid, sig)  # type: ignore[arg-type]
        except (ProcessLookupError, PermissionError):
            pass
