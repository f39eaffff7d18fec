"""Where a cell without a time limit (bench.timeout_s=0) runs: here, or in the serving child.

Python runs a signal handler between bytecodes, so while one torch call runs in this process a
stop signal (Ctrl-C, SIGTERM, the scheduler's preemption signal) waits for it to return: for a
1M-token cell on a CPU, minutes. A cell whose one training step may take long therefore runs
in lcab.launch.isolate's child, while this process waits in Connection.poll, which a signal
interrupts at once.

What is guaranteed on a single process (cluster=local, cp=none), for a stop signal that
arrives after the cell's `[run]` line:
- cell in the child (`in_child` is true): the handler appends the `interrupted` row, kills the
  child's process group (SIGTERM, then SIGKILL) and the run exits with 128 + signum, within
  milliseconds plus the time the OS takes to end the child;
- cell in this process: the same row and exit once the running torch call returns, i.e.
  after at most one call, which `in_child` keeps below about STEP_LIMIT_S (its work bounded
  by every (q, k) pair at a throughput below any measured on the device type).
Cells of a CP job with local workers run here and are stopped through their workers (the
parent waits on processes, which a signal interrupts). Under torchrun or Slurm every cell runs
in the rank's own process (a rank cannot be moved), so the reaction is one torch call.
SIGKILL records nothing; a second signal while the first is handled is ignored.
"""

from __future__ import annotations

import torch

from lcab.harness import memory
from lcab.harness.flops import attention_flops
from lcab.harness.shape import shape_spec
from lcab.plan import Cell

STEP_LIMIT_S = 5.0
# FLOP/s below what any kernel reaches when counting every (q, k) pair: eager attention ran at
# 2.2 GFLOP/s on a busy 2-core CPU (S=2K fp32 fwd_bwd); any GPU of the paper does > 50 TFLOP/s.
SLOW_FLOPS = {"cpu": 1e9, "cuda": 1e13}
# A cell whose inputs alone take this share of the free memory runs in the child too, so that
# an allocation the estimate missed ends the child (the OS OOM killer), not the sweep.
MEMORY_SHARE = 0.5


def step_seconds(cell: Cell) -> float:
    """An upper bound of one training step's time (x2 with verify's fp64 references)."""
    c = cell.config
    s, seqlen, mode = c["shape"], c["seqlen"], c["bench"]["mode"]
    work = attention_flops(seqlen * seqlen, s["heads_q"], s["head_dim"], s["batch"], mode)
    if c["bench"]["verify"]:
        work *= 2
    return work / SLOW_FLOPS.get(c["bench"]["device"].split(":")[0], SLOW_FLOPS["cuda"])


def in_child(cell: Cell) -> bool:
    """Whether a single-process cell without a time limit runs in the killable child."""
    c = cell.config
    if c["world"] > 1 or c["cp"]["name"] != "none":
        return False
    if step_seconds(cell) > STEP_LIMIT_S:
        return True
    device = torch.device(c["bench"]["device"])
    if device.type != "cpu":
        return False  # asking CUDA for its free memory would create a context in this process
    need = memory.before_mask(shape_spec(c, device), c["seqlen"], c["bench"]["mode"]).total
    return need > MEMORY_SHARE * memory.free_memory(device).bytes
