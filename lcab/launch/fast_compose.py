"""Per-job composition of a Hydra sweep, memoised on its config-group choices.

Hydra composes every job of a multirun from scratch, twice (the sweeper validates the whole
batch, the launcher composes again): about 0.1-0.2 s each, which for the 2,160 cells of the
paper's kernel sweep is more than ten minutes of an idle GPU. Jobs of a sweep differ mostly
in plain values (seqlen=32k, bench.mode=bwd) on top of a few group choices (kernel=flex).
So: compose once per distinct list of group overrides with Hydra's own loader, then apply
the plain value overrides to a copy with Hydra's own override code. Anything else (deletes,
appends, dict or list values, hydra.* keys) takes Hydra's full path unchanged.
tests/test_fast_compose.py checks the result equals Hydra's composition, override by override.
"""

from __future__ import annotations

import copy

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from omegaconf import DictConfig, OmegaConf

_full = ConfigLoaderImpl.load_sweep_config


def _plain_value(loader: ConfigLoaderImpl, o: Override) -> bool:
    """A `key=value` change of a non-group key to a scalar (what most sweep axes are)."""
    return (
        o.type == OverrideType.CHANGE
        and o.value_type == ValueType.ELEMENT
        and o.package is None
        and not o.is_hydra_override()
        and not isinstance(o.value(), (dict, list))
        and not loader.repository.group_exists(o.key_or_group.replace(".", "/"))
    )


def load_sweep_config(
    self: ConfigLoaderImpl, master_config: DictConfig, sweep_overrides: list[str]
) -> DictConfig:
    parsed = OverridesParser.create().parse_overrides(sweep_overrides)
    values = [o for o in parsed if _plain_value(self, o)]
    if not values:
        return _full(self, master_config, sweep_overrides)
    structural = [o.input_line for o in parsed if o not in values]
    cache = self.__dict__.setdefault("_lcab_compose_cache", {})
    key = (id(master_config), tuple(structural))
    if key not in cache:
        cache[key] = _full(self, master_config, structural)
    cfg = copy.deepcopy(cache[key])
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
    # What Hydra records about the job's overrides, as its own composition would.
    app = [o for o in parsed if not o.is_hydra_override()]
    cfg.hydra.overrides.task = [o.input_line for o in app]
    dirname = cfg.hydra.job.config.override_dirname
    cfg.hydra.job.override_dirname = get_overrides_dirname(
        overrides=app,
        kv_sep=dirname.kv_sep,
        item_sep=dirname.item_sep,
        exclude_keys=list(dirname.exclude_keys),
    )
    OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
    return cfg


def install() -> None:
    ConfigLoaderImpl.load_sweep_config = load_sweep_config  # type: ignore[method-assign]
