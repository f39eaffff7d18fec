"""`python -m lcab.run`: compose -> plan -> launch -> record, one Hydra job per cell."""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lcab import progress
from lcab.config import ConfigError, register_configs
from lcab.launch import run_cell
from lcab.plan import plan_cell
from lcab.results.console import cell_line
from lcab.results.schema import Result, Status
from lcab.results.store import ResultStore

register_configs()


def _dirs() -> tuple[bool, str, str]:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    sweep_dir = hc.sweep.dir if multirun else hc.runtime.output_dir
    return multirun, sweep_dir, hc.runtime.output_dir


def _is_writer() -> bool:
    """Under torchrun every rank walks the sweep; only global rank 0 writes rows and logs."""
    return int(os.environ.get("RANK", "0")) == 0


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    multirun, sweep_dir, out_dir = _dirs()
    store = ResultStore(cfg.store or os.path.join(sweep_dir, "results.jsonl"))
    try:
        cell = plan_cell(cfg)
    except ConfigError as exc:
        print(f"lcab: {exc}", file=sys.stderr)
        if _is_writer():
            raw = OmegaConf.to_container(cfg, resolve=False)
            store.append(
                Result(cell_id="invalid-config", status=Status.ERROR.value, reason=str(exc), config=raw)
            )
        if not multirun:
            sys.exit(2)
        progress.record("invalid config", Status.ERROR.value, f"[ERR] {exc}")
        return
    if cfg.resume and store.done(cell.cell_id, cfg.rerun_failed):
        line = f"[skip] {cell.label}  already in {store.path}"
        print(line)
        progress.record(cell.label, "skipped", line)
        return
    result = run_cell(cell)
    if result is None:  # a non-zero rank under torchrun
        return
    result.sweep = sweep_dir
    if _is_writer():
        store.append(result)
        if cfg.logger.name == "wandb":
            from lcab.results.wandb_sink import log_cell

            log_cell(result, OmegaConf.to_container(cfg.logger), os.path.basename(sweep_dir), out_dir)
        line = cell_line(cell.label, result)
        print(line, flush=True)
        progress.record(cell.label, result.status, line)


if __name__ == "__main__":
    main()
