"""A non-editable install carries its own configs (issue 13, item 2): `pip install .` of this
checkout into a bare folder, then `python -m lcab.run` and the `lcab` script from a directory
that is neither the checkout nor the install, with only the install on the path."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lcab_cli import ROOT, clean_env, rows

TINY = ("kernel=sdpa_math", "bench.warmup=0", "bench.iters=1")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install --no-deps .` of a copy of the checkout (a build writes into its source tree)."""
    base = tmp_path_factory.mktemp("pkg")
    src, target = base / "src", base / "site"
    for pkg in ("lcab", "hydra_plugins"):  # hydra_plugins: lcab's sweeper (hydra/sweeper=lcab)
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    p = subprocess.run(
        [*cmd, "--target", str(target), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return target


def _elsewhere(tmp_path: Path) -> Path:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return cwd


def _run(cmd: list[str], cwd: Path, target: Path) -> subprocess.CompletedProcess:
    # Only the install on the path: this checkout's lcab must not be the one that runs.
    env = clean_env(PYTHONPATH=str(target))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_install_holds_every_config_of_the_checkout(installed):
    ours = sorted(p.relative_to(ROOT / "lcab" / "conf") for p in (ROOT / "lcab" / "conf").rglob("*.yaml"))
    theirs = sorted(
        p.relative_to(installed / "lcab" / "conf") for p in (installed / "lcab" / "conf").rglob("*.yaml")
    )
    assert ours and theirs == ours
    assert not (installed / "conf").exists()  # nothing outside the package


def test_python_m_lcab_run_uses_the_installed_package_and_its_conf(installed, tmp_path):
    cwd = _elsewhere(tmp_path)
    info = _run([sys.executable, "-m", "lcab.run", "--info", "searchpath"], cwd, installed)
    assert info.returncode == 0, info.stderr[-2000:]
    assert f"file://{installed.resolve() / 'lcab' / 'conf'}" in info.stdout
    store = tmp_path / "r.jsonl"
    p = _run(
        [sys.executable, "-m", "lcab.run", *TINY, "seqlen=256", f"store={store}", "hydra.run.dir=run"],
        cwd,
        installed,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert [(r["config"]["seqlen"], r["status"]) for r in rows(store)] == [(256, "ok")]


def test_the_lcab_script_runs_a_sweep_from_any_directory(installed, tmp_path):
    """The console script that pyproject declares, as pip wrote it; `-m` after the overrides."""
    script = installed / "bin" / "lcab"
    assert script.exists()
    cwd = _elsewhere(tmp_path)
    info = _run([sys.executable, str(script), "--info", "searchpath"], cwd, installed)
    assert info.returncode == 0, info.stderr[-2000:]
    assert "pkg://lcab.conf" in info.stdout
    store = tmp_path / "r.jsonl"
    p = _run(
        [sys.executable, str(script), *TINY, "-m", "seqlen=256,320", f"store={store}", "hydra.sweep.dir=sw"],
        cwd,
        installed,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted((r["config"]["seqlen"], r["status"]) for r in rows(store)) == [(256, "ok"), (320, "ok")]
