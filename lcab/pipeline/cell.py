"""A cell from start to row: prepare -> measure -> Result, on one process (cp=none, the identity
strategy at world 1, or cp.emulate=W) or on every rank of a live process group.

On ranks, preparation's outcome is agreed over all ranks first, so a cell that cannot run
(unsupported, bad degrees) becomes a recorded status on every rank instead of a hang; failures
after it propagate, and the launcher turns them into the job's error status."""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist

from lcab.errors import ConfigError, Unavailable, Unsupported
from lcab.pipeline.measure import measure_emulated, measure_here, measure_ranks
from lcab.pipeline.prepare import emulated_world, load_kernel, open_cell, prepare
from lcab.plan import Cell
from lcab.results.outcome import classify, judge, now, result_row
from lcab.results.schema import Result, Status


def single_process(cell: Cell) -> bool:
    """Whether the cell runs in this one process: cp=none at world 1, or an emulated CP world."""
    c = cell.config
    return emulated_world(c) > 0 or (c["world"] == 1 and c["cp"]["name"] == "none")


def refusal(cell: Cell) -> tuple[Status, str] | None:
    """Why a multi-process cell's ranks should not start (recorded as its row), or None."""
    c, cp = cell.config, cell.config["cp"]
    if cp["name"] == "none":
        return Status.ERROR, f"cp=none runs on one process; got world {c['world']} (use a cp strategy)"
    # A missing kernel package is a fact of this machine whatever the world: say that first.
    try:
        kernel = load_kernel(c)
    except ConfigError:
        kernel = None  # an unknown name is an error, recorded where the cell runs
    if kernel is not None:
        ok, why = kernel.available(torch.device(c["bench"]["device"]))
        if not ok:
            return Status.UNAVAILABLE, why
    if c["world"] == 1:
        return Status.ERROR, f"{cp['name']} needs world > 1; set cluster.nproc or cp.emulate"
    return None


def execute(cell: Cell) -> Result:
    """One process, this device. Every outcome, including a crash, becomes a Result."""
    c = cell.config
    device = torch.device(c["bench"]["device"])
    started = now()
    kernel, metrics = None, {}
    try:
        kernel = load_kernel(c)
        w = emulated_world(c)
        if w:
            metrics = measure_emulated(cell, prepare(cell, device, 0, w, kernel, emulated=True), device)
        else:
            p = prepare(cell, device, 0, 1, kernel)
            metrics = measure_here(cell, p, device, open_cell(p, c["cp"], device))
        status, reason = judge(metrics)
    except Exception as exc:
        metrics = {}
        status, reason = classify(exc)
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    versions = kernel.versions() if kernel else {}
    return result_row(
        cell, status, reason, metrics=metrics, device=device, versions=versions, started_at=started
    )


def _agree(err: tuple[str, str] | None) -> tuple[int, str, str] | None:
    errs = [None] * dist.get_world_size()
    dist.all_gather_object(errs, err)
    for r, e in enumerate(errs):
        if e is not None:
            return r, e[0], e[1]
    return None


def execute_rank(cell: Cell, device: torch.device) -> Result | None:
    """Run the cell on this rank of the process group; Result on rank 0, None on the others."""
    c = cell.config
    rank, world = dist.get_rank(), dist.get_world_size()
    started = now()
    kernel, prep, err = None, None, None
    try:
        if world != c["world"]:
            raise ConfigError(f"cell expects world {c['world']} but the process group has {world} ranks")
        kernel = load_kernel(c)
        prep = prepare(cell, device, rank, world, kernel)
    except (ConfigError, Unsupported, Unavailable, ValueError, KeyError) as exc:
        st, why = classify(exc)
        err = (st.value, why.strip("'\""))
    agreed = _agree(err)
    versions = kernel.versions() if kernel else {}
    if agreed is not None:
        _, status, why = agreed
        return (
            result_row(cell, status, why, device=device, versions=versions, started_at=started)
            if rank == 0
            else None
        )
    run = open_cell(prep, c["cp"], device)
    fault = os.environ.get("LCAB_FAULT_RANK")  # fault injection for the launcher's tests
    if fault is not None and int(fault) == rank:
        if os.environ.get("LCAB_FAULT_KIND", "raise") == "hang":
            time.sleep(3600)  # the peers' next collective times out
        raise RuntimeError(f"injected fault on rank {rank} (LCAB_FAULT_RANK)")
    metrics = measure_ranks(cell, prep, device, run)
    if rank != 0:
        return None
    status, reason = judge(metrics)
    return result_row(
        cell, status, reason, metrics=metrics, device=device, versions=versions, started_at=started
    )
