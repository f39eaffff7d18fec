"""A stop signal ends a long cell at once with its `interrupted` row (issue 13, item 5).

`python -m lcab.run seqlen=1m` on a CPU spends minutes in single torch calls; a signal to a
process inside one waits until it returns. lcab runs such a cell in its killable child
(lcab/launch/placement.py), so the waiting parent handles the signal at once. Start-up waits
are generous (a busy machine); the reaction to the signal is bounded tightly.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
from lcab_cli import clean_env, rows

REACTION_S = 10.0  # the reaction itself is milliseconds; exiting the interpreter takes a second


def _start(tmp_path, store):
    proc = subprocess.Popen(
        [sys.executable, "-m", "lcab.run", "seqlen=1m", f"store={store}"],
        cwd=tmp_path,
        env=clean_env(PYTHONWARNINGS="ignore"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    running = threading.Event()

    def read(stream) -> None:  # both pipes drained, so the run never blocks on a full one
        for line in stream:
            out.append(line)
            if line.startswith("[run"):
                running.set()

    for stream in (proc.stdout, proc.stderr):
        threading.Thread(target=read, args=(stream,), daemon=True).start()
    return proc, out, running


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_ends_a_long_cell_promptly_with_its_row(tmp_path, sig):
    store = tmp_path / "r.jsonl"
    proc, out, running = _start(tmp_path, store)
    try:
        assert running.wait(180), "".join(out)[-3000:]
        # Well inside the cell: the mask and the inputs are built within about two seconds of
        # [run], then one forward call over 1M causal takes tens of seconds here.
        time.sleep(6)
        assert proc.poll() is None, "".join(out)
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(REACTION_S)
        reaction = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.2)  # the reader threads take the last lines
    err = "".join(out)[-3000:]
    assert proc.returncode == 128 + sig, err
    got = rows(store)
    assert [r["status"] for r in got] == ["interrupted"], err
    assert got[0]["reason"] == f"{sig.name} during the cell"
    assert got[0]["config"]["seqlen"] == 2**20
    # The row records what reruns it, written from the signal handler too (lcab/results/overrides.py).
    assert got[0]["overrides"] == ["seqlen=1m", f"store={store}"]
    assert reaction < REACTION_S
