"""Hydra's per-job cost of a multirun: lcab's config, a task that does nothing.

Runs a sweep through Hydra's own machinery (the sweeper selected by lcab/conf/config.yaml,
which validates every job by composing it, then the basic launcher, which composes it again
and runs it) with a no-op task, and prints wall seconds per job. The default sweep is one
kernel's column of the paper's kernel sweep: `+experiment=paper_kernels kernel=cudnn`, 12
masks x 9 seqlens x 2 modes = 216 jobs, 12 distinct config-group choices. Each repeat is a
fresh process (nothing cached between repeats); the median is printed last. Hydra's logging
is off (no job log files) so what is timed is composition plus Hydra's per-job bookkeeping.

  python scripts/compose_cost.py                          # lcab's sweeper (the default)
  python scripts/compose_cost.py hydra/sweeper=basic      # Hydra's own sweeper, for comparison
  PYTHONPATH=/path/to/other/checkout python scripts/compose_cost.py   # another tree's lcab
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

SWEEP = ["+experiment=paper_kernels", "kernel=cudnn"]
QUIET = ["hydra/hydra_logging=disabled", "hydra/job_logging=disabled", "~hydra.callbacks.progress"]


def child(overrides: list[str]) -> None:
    """One multirun in this process; prints {"jobs", "seconds", "sweeper"} as one JSON line."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    import lcab.run  # noqa: F401  (what the CLI registers at import: schemas, resolvers)
    from lcab.compose import CONF_DIR

    seen: list[str] = []

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def noop(cfg: DictConfig) -> None:
        seen.append(str(HydraConfig.get().sweeper._target_))

    with tempfile.TemporaryDirectory() as out:
        sys.argv = [sys.argv[0], "-m", *overrides, *QUIET, f"hydra.sweep.dir={out}/sweep"]
        t0 = time.perf_counter()
        noop()
        seconds = time.perf_counter() - t0
    print(json.dumps({"jobs": len(seen), "seconds": seconds, "sweeper": seen[0] if seen else None}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides added to the sweep's")
    args = ap.parse_args()
    if args.child:
        child(args.overrides)
        return
    per_job = []
    for i in range(args.repeat):
        cmd = [sys.executable, __file__, "--child", "--", *SWEEP, *args.overrides]
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            sys.exit(f"compose_cost: run {i + 1} failed:\n{p.stderr[-2000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        per_job.append(r["seconds"] / r["jobs"])
        print(
            f"run {i + 1}: {r['jobs']} jobs in {r['seconds']:.2f} s = {per_job[-1]:.4f} s/job ({r['sweeper']})"
        )
    print(f"median: {statistics.median(per_job):.4f} s/job over {args.repeat} runs")


if __name__ == "__main__":
    main()
