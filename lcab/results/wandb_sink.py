"""W&B sink: one run per cell, grouped by sweep, flattened config and summary metrics."""

from __future__ import annotations

import os
import sys

from lcab.results.schema import Result, Status


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_name(config: dict) -> str:
    cp = config["cp"]["name"]
    return f"{config['kernel']['name']}-{cp}-{config['mask']['name']}-{config['seqlen']}-w{config['world']}"


def mode_of(logger_cfg: dict) -> str:
    return logger_cfg.get("mode") or os.environ.get("WANDB_MODE") or "offline"


# Modes that write local files only; any other mode talks to a W&B server and needs a login.
LOCAL_MODES = ("offline", "disabled", "dryrun")


def check_can_log(logger_cfg: dict) -> None:
    """Before the cell runs: can its W&B run be written? Raises ConfigError with one line.

    Checked first so that a cell is never measured and stored as ok without its W&B run (a
    rerun skips ok cells, so that run would never be made)."""
    from lcab.config import ConfigError

    mode = mode_of(logger_cfg)
    try:
        import wandb
    except ImportError as exc:
        raise ConfigError(f"logger=wandb needs the wandb package ({exc})") from None
    if mode in LOCAL_MODES:
        return
    # The credentials wandb.init would use (WANDB_API_KEY, settings, .netrc); never prompts.
    if not wandb.login(prompt=False, verify=False):
        raise ConfigError(
            f"logger=wandb in {mode} mode needs a W&B login: run `wandb login` or set WANDB_API_KEY "
            "(or WANDB_MODE=offline, then `wandb sync`)"
        )


def log_cell_or_mark(result: Result, logger_cfg: dict, group: str, out_dir: str) -> None:
    """Writes the cell's W&B run before its row is stored; if that fails the row says so and is
    an error, so a rerun measures the cell again and makes the run."""
    try:
        log_cell(result, logger_cfg, group, out_dir)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        why = f"W&B run not written: {type(exc).__name__}: {lines[0] if lines else ''}"
        print(f"lcab: {why}", file=sys.stderr, flush=True)
        if result.status == Status.OK.value:
            result.status, result.reason = Status.ERROR.value, f"{why} (measured; rerun to log it)"
        else:
            result.reason = f"{result.reason}; {why}"


def log_cell(result: Result, logger_cfg: dict, group: str, out_dir: str) -> str:
    """Writes one W&B run for the cell; returns the run's local directory."""
    import wandb  # lazy: logger=none must not import wandb

    mode = mode_of(logger_cfg)
    run = wandb.init(
        project=logger_cfg.get("project") or "lcab",
        entity=logger_cfg.get("entity") or None,
        group=logger_cfg.get("group") or group,
        name=run_name(result.config),
        job_type=result.config["bench"]["mode"],
        config={**flatten(result.config), "cell_id": result.cell_id},
        dir=logger_cfg.get("dir") or out_dir,
        mode=mode,
        reinit="create_new",
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
    )
    summary = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, bool)) or v is None}
    summary.update(status=result.status, reason=result.reason)
    summary.update({f"env.{k}": v for k, v in flatten(result.env).items()})
    run.summary.update(summary)
    run_dir = run.dir
    run.finish()
    return run_dir


TABLE_COLUMNS = (
    "kernel",
    "cp",
    "mask",
    "seqlen",
    "world",
    "mode",
    "status",
    "tflops",
    "time_ms_p50",
    "time_ms_p20",
    "time_ms_p80",
    "mfu",
    "peak_mem_gib",
    "reason",
    "cell_id",
)


def table_row(row: dict) -> list:
    c, m = row.get("config", {}), row.get("metrics", {})
    return [
        c.get("kernel", {}).get("name"),
        c.get("cp", {}).get("name"),
        c.get("mask", {}).get("name"),
        c.get("seqlen"),
        c.get("world"),
        c.get("bench", {}).get("mode"),
        row.get("status"),
        *(m.get(k) for k in ("tflops", "time_ms_p50", "time_ms_p20", "time_ms_p80", "mfu", "peak_mem_gib")),
        row.get("reason", ""),
        row.get("cell_id"),
    ]


def log_sweep_table(rows: list[dict], logger_cfg: dict, group: str, out_dir: str) -> str:
    """One extra run per sweep (job_type "sweep") holding a W&B Table with a row per cell."""
    import wandb

    mode = mode_of(logger_cfg)
    run = wandb.init(
        project=logger_cfg.get("project") or "lcab",
        entity=logger_cfg.get("entity") or None,
        group=logger_cfg.get("group") or group,
        name=f"sweep-{logger_cfg.get('group') or group}",
        job_type="sweep",
        dir=logger_cfg.get("dir") or out_dir,
        mode=mode,
        reinit="create_new",
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
    )
    table = wandb.Table(columns=list(TABLE_COLUMNS), data=[table_row(r) for r in rows])
    run.log({"cells": table})
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    run.summary.update({"n_cells": len(rows), **{f"n_{k}": v for k, v in counts.items()}})
    run_dir = run.dir
    run.finish()
    return run_dir
