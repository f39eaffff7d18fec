"""Each strategy's timeline as lcab's code runs it: what is hidden under compute, what is exposed.

ring / usp (ring part): the hop that brings step s+1's block is posted when step s starts
  (batched isend/irecv) and runs under step s's compute. Member i starts step s+1 when its own
  step s is done and the block has arrived; the block left member i-1 when both ends had posted
  the exchange (max of their step-s starts) and takes one hop. The recurrence runs over all
  members at once, so a slow member or a slow (inter-node) hop delays the ones after it.
  Backward: K/V and dK/dV hops share the link (their bytes add); the last dK/dV hop is exposed.
double_ring: the same inside each window (inner hops); the block that starts the next window
  travels on the outer ring from the start of the current window, hidden under ws inner steps.
ulysses (and usp's Ulysses part): all-to-alls of q, k, v before and of out after: exposed.
ring_allgather: lcab gathers K/V before computing and reduce-scatters dK/dV after the backward's
  compute: both exposed (the all-gather is not split per chunk to overlap, as Llama 3 might).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hops:
    """Per step s >= 1: which member sent its block (prev[s] [R]), at the start of which of its
    steps (sent_at[s]) and how long the hop takes (secs[s] [R])."""

    prev: list[np.ndarray]
    sent_at: list[int]
    secs: list[np.ndarray]


def ring_hops_layout(r: int, windows: int, inner: np.ndarray, outer: np.ndarray) -> Hops:
    """Hops of a plain ring (windows <= 1: every hop `inner`) or a double ring."""
    i = np.arange(r)
    nw = max(1, windows)
    ws = r // nw
    prev, sent_at, secs = [np.zeros(r, dtype=np.int64)], [0], [np.zeros(r)]
    w, j = divmod(i, ws)
    for s in range(1, r):
        if nw > 1 and s % ws == 0:
            prev.append(((w - 1) % nw) * ws + j)
            sent_at.append(s - ws)
            secs.append(outer)
        else:
            prev.append(w * ws + (j - 1) % ws if nw > 1 else (i - 1) % r)
            sent_at.append(s - 1)
            secs.append(inner)
    return Hops(prev, sent_at, secs)


def ring_time(compute: np.ndarray, hops: Hops, start: float = 0.0) -> np.ndarray:
    """[R] finish time of each member: compute [R, steps] under the hop recurrence."""
    r, n = compute.shape
    starts = np.zeros((r, n))
    starts[:, 0] = start
    for s in range(1, n):
        p, t0 = hops.prev[s], hops.sent_at[s]
        posted = np.maximum(starts[p, t0], starts[:, t0])
        arrive = posted + hops.secs[s]
        starts[:, s] = np.maximum(starts[:, s - 1] + compute[:, s - 1], arrive)
    return starts[:, -1] + compute[:, -1]
