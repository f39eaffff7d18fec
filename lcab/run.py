"""`python -m lcab.run`: compose -> plan -> launch -> record, one Hydra job per cell."""

from __future__ import annotations

import logging
import os
import signal
import sys

import lcab.quiet_start  # noqa: F401  (first: Ctrl-C while torch and Hydra import is one line)

# isort: split
import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lcab import errors, progress
from lcab.config import ConfigError, register_configs
from lcab.launch import argv, placement, resolvers, run_cell, slurm, torchrun
from lcab.launch.isolate import Deadline, run_with_timeout
from lcab.launch.signals import Interrupted, interruptible
from lcab.plan import Cell, plan_cell, preflight, store_path, world_size
from lcab.results.console import cell_line
from lcab.results.outcome import now, result_row
from lcab.results.overrides import JobStore
from lcab.results.schema import Result, Status
from lcab.results.store import ResultStore

register_configs()
resolvers.register()


def _dirs() -> tuple[bool, str, str]:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    sweep_dir = hc.sweep.dir if multirun else hc.runtime.output_dir
    return multirun, sweep_dir, hc.runtime.output_dir


def _is_writer() -> bool:
    """Under torchrun every rank walks the sweep; only global rank 0 writes rows and logs."""
    return int(os.environ.get("RANK", "0")) == 0


def _in_distributed_job(cfg: DictConfig) -> bool:
    return cfg.cluster.name in ("torchrun", "slurm") or torchrun.under_torchrun()


def _quiet_non_writer() -> None:
    """Slurm tasks of one cell share rank 0's output dir; only rank 0 keeps Hydra's log file."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            root.removeHandler(h)
            h.close()


def _run(cfg: DictConfig, cell: Cell, store: ResultStore, sweep_dir: str) -> Result | None:
    """Runs the cell under the stop signals and the per-cell limit; None on ranks > 0."""
    started = now()

    def record(status: Status, reason: str) -> None:
        if _is_writer():
            store.append(result_row(cell, status, reason, sweep=sweep_dir, started_at=started))

    def record_stop(reason: str) -> None:
        record(Status.INTERRUPTED, reason)
        if _is_writer():
            print(f"[INT] {cell.label}  {reason}", file=sys.stderr, flush=True)

    def record_timeout() -> None:
        reason = f"timeout after {timeout_s:g} s (the distributed job ends; rerun to resume)"
        record(Status.ERROR, reason)
        print(f"lcab: {cell.label}: {reason}", file=sys.stderr, flush=True)

    timeout_s = float(cfg.bench.timeout_s)
    try:
        with interruptible(lambda signum: record_stop(f"{signal.Signals(signum).name} during the cell")):
            progress.running(cell.label)  # from here a stop signal records this cell
            if timeout_s <= 0:  # long cells wait in the killable child (lcab/launch/placement.py)
                if _in_distributed_job(cfg) or not placement.in_child(cell):
                    return run_cell(cell)
                return run_with_timeout(cell, None)
            if _in_distributed_job(cfg):
                with Deadline(timeout_s, record_timeout):
                    return run_cell(cell)
            return run_with_timeout(cell, timeout_s)
    except Interrupted as exc:
        progress.record(cell.label, Status.INTERRUPTED.value, f"[INT] {cell.label}  {exc}")
        exc.forward()
        raise


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    _, sweep_dir, out_dir = _dirs()
    store = JobStore(store_path(cfg, sweep_dir))  # each row records the job's Hydra overrides
    if _is_writer():
        try:
            store.check_writable()
        except ConfigError as exc:  # no cell could be recorded: stop before running one, sweep too
            print(f"lcab: {exc}", file=sys.stderr)
            sys.exit(2)
    try:
        if cfg.cluster.name == "slurm":
            slurm.export_env(world_size(cfg))
        cell = plan_cell(cfg)
    except (ConfigError, OmegaConfBaseException) as exc:
        exc = errors.as_config_error(exc)  # e.g. cluster.name='${oops}': one line too
        print(f"lcab: {exc}", file=sys.stderr)
        if _is_writer():
            raw = OmegaConf.to_container(cfg, resolve=False)
            # With its sweep and time, so the report puts it with its sweep's cells.
            store.append(result_row(Cell(raw, "invalid-config"), Status.ERROR, str(exc), sweep=sweep_dir))
        progress.record(progress.INVALID_CONFIG, Status.ERROR.value, f"[ERR] {exc}", config_error=True)
        return
    if not _is_writer():
        _quiet_non_writer()
    if cfg.resume and store.done(cell.cell_id, cfg.rerun_failed):
        line = f"[skip] {cell.label}  already in {store.path}"
        if _is_writer():
            print(line)
        progress.record(cell.label, "skipped", line)
        return
    try:
        preflight(cell)  # what needs no process (divisibility, ranks, W&B login): before any starts
    except ConfigError as exc:
        print(f"lcab: {cell.label}: {exc}", file=sys.stderr)
        if _is_writer():
            store.append(result_row(cell, Status.ERROR, str(exc), sweep=sweep_dir))
        progress.record(cell.label, Status.ERROR.value, f"[ERR] {cell.label}  {exc}", config_error=True)
        return
    result = _run(cfg, cell, store, sweep_dir)
    if result is None:  # a non-zero rank under torchrun
        return
    result.sweep = sweep_dir
    if _is_writer():
        if cfg.logger.name == "wandb":  # before the row: a row stored ok always has its W&B run
            from lcab.results.wandb_sink import log_cell_or_mark

            log_cell_or_mark(result, OmegaConf.to_container(cfg.logger), os.path.basename(sweep_dir), out_dir)
        store.append(result)
        line = cell_line(cell.label, result)
        print(line, flush=True)
        progress.record(cell.label, result.status, line)


def cli() -> None:
    with errors.reported():  # a mistake Hydra or lcab finds: one `lcab:` line, exit 2 (config) or 1
        sys.argv[1:] = argv.normalize(torchrun.adapt_argv(sys.argv[1:]))  # -m anywhere
        main()
    sys.exit(progress.exit_status())  # one run and a sweep alike (lcab/progress.py)


if __name__ == "__main__":
    cli()
