"""The environment record names the code that ran, with or without git."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import lcab
from lcab.results.env import code_sha

PKG = Path(lcab.__file__).resolve().parent


def _code_sha_of(tree: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "from lcab.results.env import code_sha; print(code_sha())"],
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tree,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_code_sha_names_the_sources_not_the_checkout(tmp_path):
    copy = tmp_path / "a"
    shutil.copytree(PKG, copy / "lcab", ignore=shutil.ignore_patterns("__pycache__"))
    # A copy outside any git checkout has the same code, so the same sha.
    assert _code_sha_of(copy) == code_sha()
    # One changed byte in one source file is other code.
    f = copy / "lcab" / "harness" / "flops.py"
    f.write_text(f.read_text() + "\n")
    assert _code_sha_of(copy) != code_sha()
