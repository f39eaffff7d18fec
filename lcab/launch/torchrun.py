"""Running under `torchrun --nproc-per-node N -m lcab.run ...`.

Every rank runs Hydra and walks the same sweep in the same order, so every rank reaches every
cell's collectives. Only global rank 0 writes rows, W&B runs and Hydra's logs: the other
ranks get `cluster=torchrun`'s world size like rank 0, but their Hydra output goes to a
throw-away directory with logging off (unless the user named the output directory, which
then holds the store all ranks read to decide which cells to skip).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def under_torchrun(env: dict[str, str] | None = None) -> bool:
    e = os.environ if env is None else env
    return "TORCHELASTIC_RUN_ID" in e or all(k in e for k in TORCHRUN_KEYS)


def rank(env: dict[str, str] | None = None) -> int:
    e = os.environ if env is None else env
    return int(e.get("RANK", "0"))


def _given(argv: list[str], key: str) -> bool:
    return any(a.lstrip("+~").split("=", 1)[0] == key for a in argv)


def adapt_argv(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """Hydra overrides that make a torchrun rank behave as described above."""
    if not under_torchrun(env):
        return argv
    out = list(argv)
    if not _given(out, "cluster"):
        out.append("cluster=torchrun")
    if rank(env) != 0:
        scratch = tempfile.mkdtemp(prefix=f"lcab-rank{rank(env)}-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        out += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
        for key in ("hydra.run.dir", "hydra.sweep.dir"):
            if not _given(out, key):
                out.append(f"{key}={scratch}")
    return out
