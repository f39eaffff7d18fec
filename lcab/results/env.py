"""The environment record that makes every number traceable."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch


@functools.cache
def git_sha() -> str:
    """HEAD of lcab's checkout (+ "-dirty"). A copy without .git (e.g. a tree shipped to a GPU
    machine) says which commit it is through LCAB_GIT_SHA."""
    if os.environ.get("LCAB_GIT_SHA"):
        return os.environ["LCAB_GIT_SHA"]
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if len(sha) != 40:  # not a git checkout ("HEAD" comes back outside one)
        return "unknown"
    return sha + ("-dirty" if dirty else "")


@functools.cache
def code_sha() -> str:
    """sha1 over lcab's own sources and configs (paths and contents): names the code that ran
    even where git cannot (a copied tree whose .git is another commit's, an installed wheel)."""
    import hashlib

    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha1()
    for f in sorted(p for p in pkg.rglob("*") if p.suffix in (".py", ".yaml", ".csv") and p.is_file()):
        h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def environment(device: torch.device, kernel_versions: dict[str, str] | None = None) -> dict:
    env = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "git_sha": git_sha(),
        "code_sha": code_sha(),
        "device_type": device.type,
        "kernel_packages": kernel_versions or {},
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device=torch.cuda.get_device_name(device),
            device_memory_gib=round(props.total_memory / 2**30, 1),
            sm_count=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        env.update(device=platform.processor() or platform.machine(), cpu_threads=torch.get_num_threads())
    return env
