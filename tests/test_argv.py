"""Hydra's flags anywhere on lcab's command line (issue 13, item 1): `... mask=causal -m seqlen=...`."""

from __future__ import annotations

import pytest
from lcab_cli import lcab_run, rows
from omegaconf import OmegaConf

from lcab.launch.argv import normalize


@pytest.mark.parametrize(
    ("given", "hydra_gets"),
    [
        # -m after overrides moves to the front; the overrides keep their order.
        (
            ["kernel=flash3", "cp=ring", "-m", "seqlen=8k,16k"],
            ["-m", "kernel=flash3", "cp=ring", "seqlen=8k,16k"],
        ),
        (["+experiment=smoke", "-m"], ["-m", "+experiment=smoke"]),
        (["x=1", "--multirun", "y=2"], ["--multirun", "x=1", "y=2"]),
        (["x=1", "--multi", "y=2"], ["--multi", "x=1", "y=2"]),  # argparse's unique prefix
        # A flag's value travels with it.
        (["x=1", "--cfg", "job", "y=2"], ["--cfg", "job", "x=1", "y=2"]),
        (["x=1", "-c", "hydra", "y=2", "--resolve"], ["-c", "hydra", "--resolve", "x=1", "y=2"]),
        (["-cn", "config", "x=1", "-m", "y=2"], ["-cn", "config", "-m", "x=1", "y=2"]),
        (["x=1", "--cfg=job", "y=2"], ["--cfg=job", "x=1", "y=2"]),
        # --info's value is optional: bare, it must not take the first override as its value.
        (["x=1", "--info"], ["--info=all", "x=1"]),
        (["x=1", "--info", "searchpath", "y=2"], ["--info", "searchpath", "x=1", "y=2"]),
        # Values that contain "-m" are overrides, not flags; hydra.* overrides stay overrides.
        (
            ["hydra.job.name=run-m", "x=-m", "hydra.sweep.dir=/a/-m"],
            ["hydra.job.name=run-m", "x=-m", "hydra.sweep.dir=/a/-m"],
        ),
        # Already in Hydra's order, or nothing to move: unchanged.
        (["-m", "x=1,2"], ["-m", "x=1,2"]),
        (["--help"], ["--help"]),
        ([], []),
        # A flag whose value is missing stays last, so Hydra names the missing value.
        (["x=1", "--cfg"], ["x=1", "--cfg"]),
        # After a literal `--` nothing moves.
        (["x=1", "--", "-m"], ["x=1", "--", "-m"]),
    ],
)
def test_flags_move_in_front_of_the_overrides(given, hydra_gets):
    assert normalize(given) == hydra_gets


def test_m_after_overrides_runs_the_sweep(tmp_path):
    """The README's `kernel=flash3 cp=ring mask=causal_doc -m seqlen=8k,16k,32k` form, on the CPU:
    before the fix Hydra stopped at argument parsing (rc 2, `unrecognized arguments`)."""
    store = tmp_path / "r.jsonl"
    p = lcab_run(
        tmp_path,
        "kernel=sdpa_math",
        "mask=causal",
        "-m",
        "seqlen=256,512",
        "bench.iters=1",
        "bench.warmup=0",
        f"store={store}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert p.returncode == 0, p.stderr[-2000:]
    got = sorted((r["config"]["seqlen"], r["status"]) for r in rows(store))
    assert got == [(256, "ok"), (512, "ok")]


def test_cfg_job_after_overrides_prints_the_composed_config(tmp_path):
    p = lcab_run(tmp_path, "kernel=torch", "--cfg", "job", "seqlen=300")
    assert p.returncode == 0, p.stderr[-2000:]
    cfg = OmegaConf.create(p.stdout)
    assert str(cfg.seqlen) == "300" and cfg.kernel.name == "torch"
