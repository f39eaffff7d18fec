"""`hydra/sweeper=lcab`: the Cartesian product of the sweep's values, as Hydra's basic sweeper
makes it, with each job composed through MemoisedLoader (one composition per group choice).

The sweeper hands the launcher (whatever hydra/launcher selects: basic, submitit_slurm) a
HydraContext whose config loader is the memoised one, so both compositions of a job, the
batch validation here and the launcher's, share the cache. A launcher that runs jobs in other
processes (submitit) pickles the loader without its cache; each job there composes once.
Accepts what the basic sweeper accepts: `hydra.sweeper.params` (the presets' sweeps) and
`max_batch_size`.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where a dataclass cannot resolve string annotations.
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from ._memo_loader import MemoisedLoader


@dataclass
class LcabSweeperConf:
    _target_: str = "hydra_plugins.lcab_sweeper.lcab_sweeper.LcabSweeper"
    max_batch_size: int | None = None  # jobs per batch (validated, then launched); None: all
    params: dict[str, str] | None = None  # sweep axes, as `key: a,b,c` (the presets' sweeps)


ConfigStore.instance().store(group="hydra/sweeper", name="lcab", node=LcabSweeperConf, provider="lcab")


def jobs(overrides: list[Override]) -> list[list[str]]:
    """Each job's overrides: one value of every axis, the last axis varying fastest. A key given
    twice keeps its first place and its last values (as the basic sweeper does)."""
    axes: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            kind = o.value_type.name if o.value_type is not None else "?"
            raise HydraException(f"LcabSweeper does not support sweep type : {kind}")
    return [list(job) for job in itertools.product(*axes.values())]


class LcabSweeper(Sweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None) -> None:
        if max_batch_size is not None and max_batch_size < 1:
            raise HydraException(f"hydra.sweeper.max_batch_size must be at least 1, got {max_batch_size}")
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        loader = hydra_context.config_loader
        if not isinstance(loader, MemoisedLoader):
            loader = MemoisedLoader(loader)
        self.hydra_context = HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        assert self.hydra_context is not None and self.config is not None and self.launcher is not None
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        all_jobs = jobs(parser.parse_overrides(lines))
        size = self.max_batch_size or len(all_jobs)

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns: list[Sequence[JobReturn]] = []
        for first in range(0, len(all_jobs), size):
            batch = all_jobs[first : first + size]
            self.validate_batch_is_legal(batch)  # every job composes before any runs
            results = self.launcher.launch(batch, initial_job_idx=first)
            for r in results:
                _ = r.return_value  # raises where the job raised, as the basic sweeper does
            returns.append(results)
        return returns
