"""`slurm` fixture: a real single-node Slurm (slurmctld + slurmd + munged) on localhost.

Starts from clean state (slurmctld -c, fresh state dirs, job ids from 1) for each test that
asks for it and tears it down afterwards. Skips, with the reason, only where Slurm cannot
start (packages missing, not root, daemons refusing); .ci/run installs slurm-wlm and munge.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "slurm" / "local_cluster.py"
_spec = importlib.util.spec_from_file_location("lcab_local_slurm", _PATH)
local_cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_cluster)


@pytest.fixture
def slurm(tmp_path_factory):
    """Yields the env (SLURM_CONF, PATH with the sacct stand-in) a client of the cluster needs."""
    state = tmp_path_factory.mktemp("slurm")
    try:
        env = local_cluster.start(state)
    except local_cluster.SlurmUnavailable as exc:
        pytest.skip(f"Slurm cannot start here: {exc}")
    try:
        yield env
    finally:
        local_cluster.stop(state)
