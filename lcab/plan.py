"""A sweep point becomes a Cell: the resolved config plus a stable id (hash of what is measured)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from lcab.config import (
    DTYPES,
    ConfigError,
    check_bench,
    resolve_seqlen,
    resolve_shape,
)

# Keys that say how or where a cell runs or is logged, not what is measured.
_NOT_IDENTITY = ("logger", "store", "resume", "rerun_failed", "cluster")
# Switches that add a measurement after the timed calls without changing them: a store made
# before the switch existed still resumes.
_NOT_IDENTITY_IN = {"cp": ("busbw",)}


@dataclass(frozen=True)
class Cell:
    config: dict  # resolved: seqlen is an int, shape concrete, device concrete, world set
    cell_id: str

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


def plan_cell(cfg: DictConfig) -> Cell:
    """Resolve auto values and check constraints; raises ConfigError with one clear line."""
    check_bench(cfg.bench)
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
    identity = {k: v for k, v in resolved.items() if k not in _NOT_IDENTITY}
    for group, keys in _NOT_IDENTITY_IN.items():
        if isinstance(identity.get(group), dict):
            identity[group] = {k: v for k, v in identity[group].items() if k not in keys}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Cell(config=resolved, cell_id=digest)
