"""Per-job composition of a sweep, memoised on its config-group choices.

Hydra composes every job of a multirun from scratch, twice (the sweeper validates each batch,
the launcher composes again): about 0.1-0.2 s a time, more than ten minutes for the 2,160 cells
of the paper's kernel sweep. Jobs of a sweep differ mostly in plain values (seqlen=32k,
bench.mode=bwd) on top of a few group choices (kernel=flex). This loader wraps Hydra's own one
(through the public ConfigLoader interface): it composes once per distinct set of group choices
with Hydra's loader, then sets the plain values on a copy the way Hydra's composition sets any
`key=value` (OmegaConf.update with merge, after the defaults are composed). Any other kind of
override (a delete, an append, a dict or list value, a `@package`) takes Hydra's own path, and
so does a job whose values fail to apply (the error is then Hydra's own).
tests/test_sweep_compose.py checks the result equals Hydra's composition, override by override.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from hydra.plugins.config_source import ConfigSource
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


def overrides_dirname(overrides: list[Override], exclude_keys: list[str], item_sep: str, kv_sep: str) -> str:
    """hydra.job.override_dirname as Hydra writes it: sorted `k=v` lines, excluded keys left out."""
    lines = sorted(str(o.input_line) for o in overrides if o.key_or_group not in exclude_keys)
    return re.sub("[=]", kv_sep, item_sep.join(lines))


class MemoisedLoader(ConfigLoader):
    """Hydra's config loader, with load_sweep_config memoised on a job's group choices."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self._composed: dict[tuple, DictConfig] = {}
        self._groups: dict[tuple, frozenset[str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # submitit pickles the launcher (and so this loader) for every job: no caches with it.
        return {"loader": self.loader}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["loader"])

    def _is_group(self, key: str, config_name: str | None, hydra_overrides: tuple[str, ...]) -> bool:
        """What Hydra's defaults list asks (repo.group_exists(key)), through the public interface;
        the search path is the one this job composes with (config's and overrides' hydra.searchpath)."""
        parent, _, name = key.rpartition("/")
        cache_key = (config_name, hydra_overrides, parent)
        if cache_key not in self._groups:
            names = self.loader.get_group_options(
                parent,
                results_filter=ObjectType.GROUP,
                config_name=config_name,
                overrides=list(hydra_overrides),
            )
            self._groups[cache_key] = frozenset(names)
        return name in self._groups[cache_key]

    def _group_choice(self, o: Override, config_name: str | None, hydra_overrides: tuple[str, ...]) -> bool:
        """An override Hydra's defaults list takes (a dict value on a group's key is a config edit)."""
        return not isinstance(o.value(), dict) and self._is_group(
            o.key_or_group, config_name, hydra_overrides
        )

    def _plain_value(self, o: Override, config_name: str | None, hydra_overrides: tuple[str, ...]) -> bool:
        """A `key=value` change of a non-group key to a scalar (what most sweep axes are)."""
        return (
            o.type == OverrideType.CHANGE
            and o.value_type == ValueType.ELEMENT
            and o.package is None
            and not o.is_hydra_override()
            and not isinstance(o.value(), (dict, list))
            and not o.key_or_group.startswith("/")
            and not self._is_group(o.key_or_group, config_name, hydra_overrides)
        )

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        try:
            cfg = self._memoised(master_config, sweep_overrides)
        except Exception:  # e.g. a value Hydra would reject: Hydra composes it and raises its own error
            cfg = None
        if cfg is None:
            return self.loader.load_sweep_config(master_config, sweep_overrides)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def _memoised(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig | None:
        """The job's config from the cached composition of its group choices; None where the job
        has no plain value or an override whose place among the values matters."""
        config_name = master_config.hydra.job.config_name
        hydra_overrides = tuple(OmegaConf.to_container(master_config.hydra.overrides.hydra))
        parsed = OverridesParser.create().parse_overrides(sweep_overrides)
        # Groups as this job sees them (its own hydra.* overrides may move the search path too).
        search = (*hydra_overrides, *(str(o.input_line) for o in parsed if o.is_hydra_override()))
        plain = [self._plain_value(o, config_name, search) for o in parsed]
        values = [o for o, p in zip(parsed, plain) if p]
        rest = [o for o, p in zip(parsed, plain) if not p]
        # Next to the values only group choices and hydra.* keys: any other edit of the task's
        # config (~key, +key, key={...}) must keep its order among the values, Hydra's path.
        if not values or not all(
            o.is_hydra_override() or self._group_choice(o, config_name, search) for o in rest
        ):
            return None
        return self._with_values(master_config, parsed, rest, values, (config_name, hydra_overrides))

    def _with_values(
        self,
        master_config: DictConfig,
        parsed: list[Override],
        rest: list[Override],
        values: list[Override],
        master_key: tuple,
    ) -> DictConfig:
        structural = [str(o.input_line) for o in rest]
        key = (*master_key, tuple(structural))
        if key not in self._composed:
            self._composed[key] = self.loader.load_sweep_config(master_config, structural)
        cfg = copy.deepcopy(self._composed[key])
        for o in values:  # as Hydra applies a `key=value` after composing the defaults
            OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        # What Hydra records about the job's overrides, as its own composition would.
        task = [o for o in parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = overrides_dirname(
            task, list(dirname.exclude_keys), dirname.item_sep, dirname.kv_sep
        )
        return cfg

    # The rest of the ConfigLoader interface: Hydra's loader unchanged.
    def load_configuration(
        self,
        config_name: str | None,
        overrides: list[str],
        run_mode: RunMode,
        from_shell: bool = True,
        validate_sweep_overrides: bool = True,
    ) -> DictConfig:
        return self.loader.load_configuration(
            config_name, overrides, run_mode, from_shell, validate_sweep_overrides
        )

    def get_search_path(self) -> ConfigSearchPath:
        return self.loader.get_search_path()

    def get_sources(self) -> list[ConfigSource]:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(
        self,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        return self.loader.get_group_options(group_name, results_filter, config_name, overrides)

    def compute_defaults_list(self, config_name: str | None, overrides: list[str], run_mode: RunMode) -> Any:
        return self.loader.compute_defaults_list(config_name, overrides, run_mode)
