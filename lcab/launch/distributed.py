"""Multi-process cells: inside a distributed job (torchrun / Slurm set RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) or as a local pool (cluster=local cluster.nproc=N). Every rank runs
the cell pipeline (lcab.pipeline.execute_rank); what refuses a cell before its ranks start is
the pipeline's too (lcab.pipeline.refusal).

Inside a job the process group is created once per process and reused by every cell of a Hydra
multirun; it is torn down (barrier + destroy) at exit.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os

import torch

from lcab.plan import Cell
from lcab.results.outcome import classify, now, result_row
from lcab.results.schema import Result, Status

COLLECTIVE_TIMEOUT_S = float(os.environ.get("LCAB_COLLECTIVE_TIMEOUT_S", "120"))
GROUP_UP = "process group up"  # logged once per process, when every rank has joined

log = logging.getLogger(__name__)


def _backend(cell: Cell) -> str:
    b = cell.spec.cluster.backend
    if b != "auto":
        return b
    return "nccl" if cell.config["bench"]["device"] == "cuda" else "gloo"


def _error(cell: Cell, status: Status | str, reason: str) -> Result:
    dev = torch.device("cpu") if cell.config["bench"]["device"] == "cpu" else torch.device("cuda")
    return result_row(cell, status, reason, device=dev, started_at=now())


def run_distributed(cell: Cell) -> Result | None:
    from lcab.pipeline import refusal

    c = cell.config
    refused = refusal(cell)
    if refused is not None:
        return _error(cell, *refused)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _in_job(cell)
    if c["cluster"]["name"] != "local":
        return _error(
            cell,
            Status.ERROR.value,
            f"cluster={c['cluster']['name']} runs under its launcher (RANK/WORLD_SIZE unset)",
        )
    return _local(cell)


def _device_for_rank(cell: Cell, local_rank: int) -> torch.device:
    if cell.config["bench"]["device"] == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def run_on_this_rank(cell: Cell) -> Result | None:
    """The body every rank runs (a pool task, or directly inside a job)."""
    from lcab.pipeline import execute_rank

    local = int(os.environ.get("LOCAL_RANK", "0"))
    return execute_rank(cell, _device_for_rank(cell, local))


def _local(cell: Cell) -> Result:
    from lcab.launch.pool import WorkerError, get_pool

    n = int(cell.config["world"])
    dev = cell.config["bench"]["device"]
    if dev == "cuda" and torch.cuda.device_count() < n:
        return _error(
            cell,
            Status.UNAVAILABLE.value,
            f"cluster.nproc={n} needs {n} GPUs, {torch.cuda.device_count()} visible",
        )
    try:
        pool = get_pool(n, _backend(cell), dev, COLLECTIVE_TIMEOUT_S)
        res = pool.run(run_on_this_rank, cell)
    except WorkerError as exc:
        return _error(cell, exc.status, f"rank {exc.rank}: {exc.reason}")
    return res


_INIT = {"done": False}


def _ensure_group(cell: Cell) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    for k, v in {
        "NCCL_NVLS_ENABLE": "0",
        "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
        "NVSHMEM_DISABLE_NVLS": "1",
    }.items():
        os.environ.setdefault(k, v)
    if cell.config["bench"]["device"] == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(_backend(cell), timeout=dt.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    log.info(
        "%s: rank %d of %d, %s via %s:%s",
        GROUP_UP,
        dist.get_rank(),
        dist.get_world_size(),
        dist.get_backend(),
        os.environ.get("MASTER_ADDR"),
        os.environ.get("MASTER_PORT"),
    )
    if not _INIT["done"]:
        atexit.register(_teardown)
        _INIT["done"] = True


def _teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def _in_job(cell: Cell) -> Result | None:
    _ensure_group(cell)
    try:
        return run_on_this_rank(cell)
    except Exception as exc:  # the collective timeout ends a peer's hang; record ours
        status, why = classify(exc)
        if int(os.environ["RANK"]) == 0:
            return _error(cell, status.value, why)
        return None
