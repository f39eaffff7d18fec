"""Hydra callback: a progress bar over a multirun, a summary at its end, and the exit status.

The command's exit status (lcab.run's cli(), after Hydra returns, for one run and a sweep
alike): 2 when a config was rejected (its one `lcab:` line was printed, and a row recorded
where a cell existed); else 1 when a cell is `error` or `invalid` (or a W&B sweep table could
not be written); else 0. `unsupported`, `unavailable` and `oom` are answers about this machine
(table marks X / - / E), recorded like a number, so a sweep of GPU kernels on a CPU exits 0
with its marked rows; skipped cells were done before. An `interrupted` cell ends the command
at once with 128 + the signal (lcab/launch/signals.py).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# The basic launcher runs jobs in this process, so the bar lives at module level.
STATE: dict[str, Any] = {
    "total": 0,
    "done": 0,
    "rows": [],
    "progress": None,
    "task": None,
    "config_errors": 0,
    "sink_errors": 0,
}
FAILED = ("error", "invalid", "interrupted")
INVALID_CONFIG = "invalid config"  # the label of a config rejected before it became a cell


def sweep_size(overrides: list[str]) -> int:
    parsed = OverridesParser.create().parse_overrides(overrides)
    sizes = [len(list(o.sweep_iterator())) for o in parsed if o.is_sweep_override()]
    return max(1, math.prod(sizes)) if sizes else 1


def _task_overrides(config: DictConfig) -> list[str]:
    """The command line's overrides as typed: `seqlen='${oops}'` is text here, not resolved."""
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]


def _rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def running(label: str) -> None:
    """Shows the cell now running: on the bar on a terminal, else one line on stderr (a batch
    log, e.g. Slurm's, then says which cell a job was in when it stopped)."""
    prog = STATE["progress"]
    if prog is not None:
        prog.update(STATE["task"], description=f"{STATE['done'] + 1}/{STATE['total']} {label}")
    elif _rank0():
        print(f"[run ] {label}", file=sys.stderr, flush=True)


def record(label: str, status: str, line: str, config_error: bool = False) -> None:
    """One cell's outcome; config_error: rejected by a constraint check (its line was printed)."""
    STATE["done"] += 1
    STATE["config_errors"] += int(config_error)
    STATE["rows"].append((label, status, line))
    prog = STATE["progress"]
    if prog is not None:
        prog.update(STATE["task"], advance=1)


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        STATE.update(
            total=sweep_size(_task_overrides(config)),
            done=0,
            rows=[],
            config_errors=0,
            sink_errors=0,
        )
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
        try:
            _log_sweep_table(config)
        except Exception as exc:  # the cells' rows and runs are written; only the table is missing
            STATE["sink_errors"] += 1
            print(f"lcab: W&B sweep table not written: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not STATE["rows"]:
            # Jobs ran elsewhere (submitit/Slurm): the rows this sweep wrote are in its store.
            STATE["rows"] = _rows_from_store(config)
            STATE["config_errors"] = sum(label == INVALID_CONFIG for label, _, _ in STATE["rows"])
        if not STATE["rows"]:
            return
        print()
        for _, _, line in STATE["rows"]:
            print("  " + line)
        print(summary_line("sweep", _store_path(config, str(config.hydra.sweep.dir))), flush=True)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        """One run (no -m): the same last line as a sweep, saying where its row went."""
        if STATE["rows"] and _rank0():
            print(summary_line("run", _store_path(config, str(config.hydra.runtime.output_dir))), flush=True)


def _store_path(config: DictConfig, out_dir: str) -> str:
    try:
        store = config.get("store")
    except Exception:  # e.g. store='${oops}': that error was reported where the job used it
        store = None
    return str(store or os.path.join(out_dir, "results.jsonl"))


def summary_line(kind: str, store_path: str) -> str:
    """`lcab sweep: 6 cells (4 ok, 1 unsupported, 1 error); rows in PATH`."""
    counts: dict[str, int] = {}
    for _, status, _ in STATE["rows"]:
        counts[status] = counts.get(status, 0) + 1
    n = len(STATE["rows"])
    what = ", ".join(f"{v} {k}" for k, v in counts.items())
    return f"lcab {kind}: {n} cell{'' if n == 1 else 's'} ({what}); rows in {store_path}"


def exit_status() -> int:
    """The command's exit status from the outcomes recorded in this process (module docstring)."""
    statuses = [status for _, status, _ in STATE["rows"]]
    if STATE["config_errors"]:
        return 2
    if STATE["sink_errors"] or any(s in FAILED for s in statuses):
        return 1
    return 0


def _rows_from_store(config: DictConfig) -> list[tuple[str, str, str]]:
    from lcab.plan import Cell
    from lcab.results.console import cell_line
    from lcab.results.schema import Result
    from lcab.results.store import ResultStore

    sweep_dir = str(config.hydra.sweep.dir)
    store = ResultStore(config.get("store") or os.path.join(sweep_dir, "results.jsonl"))
    mine = [r for r in store.rows() if r.get("sweep") == sweep_dir]
    # Invalid configs share one cell id and have no resolved config to label: one line each.
    out = [
        (INVALID_CONFIG, r["status"], f"[ERR] {r.get('reason', '')}")
        for r in mine
        if r["cell_id"] == "invalid-config"
    ]
    latest = {r["cell_id"]: r for r in mine if r["cell_id"] != "invalid-config"}  # newest per cell
    for row in latest.values():
        if "kernel" not in row.get("config", {}):
            continue
        try:
            label = Cell(config=row["config"], cell_id=row["cell_id"]).label
        except (KeyError, TypeError):  # a row not written by this lcab: named by its id
            label = row["cell_id"]
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
