"""Hydra callback: a progress bar over a multirun and a summary table at its end."""

from __future__ import annotations

import math
import os
import sys
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# The basic launcher runs jobs in this process, so the bar lives at module level.
STATE: dict[str, Any] = {"total": 0, "done": 0, "rows": [], "progress": None, "task": None}


def sweep_size(overrides: list[str]) -> int:
    parsed = OverridesParser.create().parse_overrides(overrides)
    sizes = [len(list(o.sweep_iterator())) for o in parsed if o.is_sweep_override()]
    return max(1, math.prod(sizes)) if sizes else 1


def _rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def running(label: str) -> None:
    """Shows the cell now running on the bar."""
    prog = STATE["progress"]
    if prog is not None:
        prog.update(STATE["task"], description=f"{STATE['done'] + 1}/{STATE['total']} {label}")


def record(label: str, status: str, line: str) -> None:
    STATE["done"] += 1
    STATE["rows"].append((label, status, line))
    prog = STATE["progress"]
    if prog is not None:
        prog.update(STATE["task"], advance=1)


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        STATE.update(total=sweep_size(list(config.hydra.overrides.task)), done=0, rows=[])
        if sys.stderr.isatty() and _rank0():
            from rich.progress import Progress

            prog = Progress(transient=False)
            prog.start()
            STATE["progress"] = prog
            STATE["task"] = prog.add_task("sweep", total=STATE["total"])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if STATE["progress"] is not None:
            STATE["progress"].stop()
            STATE["progress"] = None
        if not _rank0():
            return
        _log_sweep_table(config)
        if not STATE["rows"]:
            # Jobs ran elsewhere (submitit/Slurm): the rows this sweep wrote are in its store.
            STATE["rows"] = _rows_from_store(config)
        if not STATE["rows"]:
            return
        counts: dict[str, int] = {}
        for _, status, _ in STATE["rows"]:
            counts[status] = counts.get(status, 0) + 1
        print(
            f"\nlcab sweep: {len(STATE['rows'])} cells ({', '.join(f'{v} {k}' for k, v in counts.items())})"
        )
        for _, _, line in STATE["rows"]:
            print("  " + line)


def _rows_from_store(config: DictConfig) -> list[tuple[str, str, str]]:
    from lcab.plan import Cell
    from lcab.results.console import cell_line
    from lcab.results.schema import Result
    from lcab.results.store import ResultStore

    sweep_dir = str(config.hydra.sweep.dir)
    store = ResultStore(config.get("store") or os.path.join(sweep_dir, "results.jsonl"))
    out = []
    latest = {r["cell_id"]: r for r in store.rows() if r.get("sweep") == sweep_dir}  # newest per cell
    for row in latest.values():
        if "kernel" not in row.get("config", {}):
            continue
        label = Cell(config=row["config"], cell_id=row["cell_id"]).label
        out.append((label, row["status"], cell_line(label, Result.from_dict(row))))
    return out


def _log_sweep_table(config: DictConfig) -> None:
    """With logger=wandb, one sweep-level run with a Table of every cell in the sweep's store."""
    if config.get("logger", {}).get("name") != "wandb":
        return
    from omegaconf import OmegaConf

    from lcab.results.store import ResultStore
    from lcab.results.wandb_sink import log_sweep_table

    sweep_dir = str(config.hydra.sweep.dir)
    store = ResultStore(config.get("store") or os.path.join(sweep_dir, "results.jsonl"))
    rows = [r for r in store.latest().values() if "kernel" in r.get("config", {})]
    if rows:
        logger_cfg = OmegaConf.to_container(config.logger, resolve=True)
        log_sweep_table(rows, logger_cfg, os.path.basename(sweep_dir), sweep_dir)
