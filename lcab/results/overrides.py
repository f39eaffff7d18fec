"""The Hydra overrides a row records: its job's own, and its sweep's as typed.

Hydra 1.3 keeps a job's overrides, after the sweep is expanded (`seqlen=512`), in the job's
`hydra.overrides.task`, and the `hydra.*` ones typed (a search path, a launcher) in
`hydra.overrides.hydra`. The sweep's own task overrides (`-m seqlen=256,512 +experiment=...`)
are in the multirun's config only, which the sweeper (Hydra's basic one, and lcab's in
hydra_plugins/lcab_sweeper) saves as <sweep dir>/multirun.yaml before it launches a job, so a job
in another process (submitit on Slurm) reads them there too.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from lcab.results.schema import Result
from lcab.results.store import ResultStore


def _texts(node: object) -> list[str]:
    """Overrides as typed: `seqlen='${oops}'` stays text, never resolved."""
    return [str(o) for o in OmegaConf.to_container(node, resolve=False)]  # type: ignore[union-attr]


@lru_cache(maxsize=8)
def _saved(path: str, mtime_ns: int) -> tuple[str, ...]:
    return tuple(_texts(OmegaConf.load(path).hydra.overrides.task))


def _typed_hydra() -> list[str]:
    """The `hydra.*` overrides given; `hydra.mode` is Hydra's own record of `-m`."""
    return [o for o in _texts(HydraConfig.get().overrides.hydra) if not o.startswith("hydra.mode=")]


def job() -> list[str]:
    """What reruns this job: the `hydra.*` overrides, then its own after the sweep's expansion."""
    return _typed_hydra() + _texts(HydraConfig.get().overrides.task)


def sweep() -> list[str]:
    """The sweep's overrides with their comma lists (none if unknown); a single run's are its job's."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return job()
    path = Path(hc.sweep.dir) / "multirun.yaml"
    try:
        return _typed_hydra() + list(_saved(str(path), path.stat().st_mtime_ns))
    except Exception:  # no readable multirun.yaml (another sweeper): the row is written all the same
        return []


class JobStore(ResultStore):
    """The store as a Hydra job writes it: every row, whatever its status, carries the job's
    and the sweep's overrides."""

    def append(self, result: Result) -> None:
        if HydraConfig.initialized():
            result.overrides, result.sweep_overrides = job(), sweep()
        super().append(result)
