"""A sweep point becomes a Cell: the resolved config plus a stable id (hash of what is measured)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import cached_property

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lcab.config import (
    DTYPES,
    CellSpec,
    ConfigError,
    cell_spec,
    check_choices,
    check_values,
    resolve_seqlen,
    resolve_shape,
    schema_defaults,
)
from lcab.errors import omegaconf_line
from lcab.identity import cell_id


@dataclass(frozen=True)
class Cell:
    config: dict  # resolved: seqlen is an int, shape concrete, device concrete, world set
    cell_id: str

    @cached_property
    def spec(self) -> CellSpec:
        """The config as typed schemas (built once; `config` stays the dict written into rows)."""
        return cell_spec(self.config)

    @property
    def label(self) -> str:
        c = self.config
        cp = c["cp"]["name"] + (f"x{c['world']}" if c["world"] > 1 else "")
        return f"{c['kernel']['name']} {cp} {c['mask']['name']} S={c['seqlen']} {c['bench']['mode']}"


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("bench.device=cuda but no CUDA device is visible")
    return name


def world_size(cfg: DictConfig) -> int:
    c = cfg.cluster
    if c.name == "local":
        return int(c.nproc)
    return int(c.nodes) * int(c.tasks_per_node)


def group_choices() -> dict[str, str | None]:
    """The option picked in each config group, as Hydra recorded it (none outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def group_options(group: str) -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    return gh.config_loader().get_group_options(group) if gh.is_initialized() else []


def store_path(cfg: DictConfig, out_dir: str) -> str:
    """The results store: cfg.store, or results.jsonl in the run's (sweep's) directory. A store
    that does not resolve (store='${oops}') falls back to the default, where plan_cell's row
    then says why."""
    try:
        path = cfg.store
    except OmegaConfBaseException:
        path = ""
    return path or os.path.join(out_dir, "results.jsonl")


def plan_cell(cfg: DictConfig) -> Cell:
    """Resolve auto values and check constraints; raises ConfigError with one clear line."""
    try:
        return _plan_cell(cfg)
    except OmegaConfBaseException as exc:  # a missing key, a bad interpolation: still one line
        raise ConfigError(omegaconf_line(exc)) from None


def _plan_cell(cfg: DictConfig) -> Cell:
    check_choices(group_choices(), group_options)
    check_values(cfg)
    device = resolve_device(cfg.bench.device)
    seqlen = resolve_seqlen(cfg.seqlen, device)
    shape = resolve_shape(cfg.shape, device)
    if shape.dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {shape.dtype}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    resolved["seqlen"] = seqlen
    resolved["shape"] = asdict(shape)
    resolved["bench"]["device"] = device
    resolved["world"] = world_size(cfg)
    return Cell(config=resolved, cell_id=cell_id(resolved, schema_defaults()))


def preflight(cell: Cell) -> None:
    """What can be rejected before any process starts; raises ConfigError with one line.

    The cell exists (it has an id and a resolved config), so the caller records its row."""
    _check_world(cell.spec)
    _check_strategy(cell)
    if cell.spec.logger.name == "wandb":
        from lcab.results.wandb_sink import check_can_log

        check_can_log(cell.config["logger"])


def _check_world(c: CellSpec) -> None:
    world = c.world
    if c.cp.name == "none" and world > 1:
        raise ConfigError(f"cp=none runs on one process but the world is {world}; pick a cp strategy")
    if c.cluster.name != "local" or world == 1 or c.bench.device != "cpu":
        return  # a launcher's world is the launcher's; missing GPUs are recorded as unavailable
    from lcab.launch.pool import max_local_ranks

    limit = max_local_ranks("cpu")
    if world > limit:
        raise ConfigError(
            f"cluster.nproc={world} is more than the {limit} CPU ranks this machine runs "
            f"({os.cpu_count()} cores; at most 4 per core, 8 at least)"
        )


def _check_strategy(cell: Cell) -> None:
    """The strategy's own constraints (divisibility of heads and degrees) at the cell's world."""
    c = cell.spec
    world = c.cp.emulate or c.world
    if c.cp.name == "none" or world < 2:
        return  # a CP strategy at world 1 is recorded where the cell runs, after the kernel check
    try:
        from lcab.cp import registry

        strategy = registry.get(c.cp.name)
    except ImportError:  # the strategy needs a package this machine lacks: the cell records it
        return
    from lcab.kernels.base import DTYPE_NAMES, ShapeSpec, Unavailable, Unsupported

    s = c.shape
    shape = ShapeSpec(
        batch=s.batch,
        heads_q=s.heads_q,
        heads_kv=s.heads_kv,
        head_dim=s.head_dim,
        dtype=DTYPE_NAMES[s.dtype],
        device=torch.device(c.bench.device),
    )
    try:
        strategy.check(cell.config["cp"], shape, world)
    except (Unavailable, Unsupported, ImportError):  # facts the cell records with their status
        return
