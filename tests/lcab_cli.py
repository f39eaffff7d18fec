"""Running lcab as a user does, in a subprocess, for the tests: one environment, one runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def clean_env(**extra: str) -> dict:
    """This checkout on the path, W&B offline and quiet, and no launcher variables leaking in
    from the test runner (a stray RANK would make lcab think it runs under torchrun)."""
    e = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}
    for k in (*DIST_KEYS, "WANDB_MODE", "SLURM_JOB_ID", "SUBMITIT_FOLDER"):
        e.pop(k, None)
    return {**e, **extra}


def run_module(
    cwd: Path, module: str, *args: str, env: dict | None = None, timeout: int = 300, **popen
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def lcab_run(cwd: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run_module(cwd, "lcab.run", *args, **kw)


def rows(path: Path) -> list[dict]:
    """The rows of a results store (none if it was never written), read as lcab reads them:
    a line still being written or not a row is skipped."""
    from lcab.results.store import read_rows

    return read_rows(path)
