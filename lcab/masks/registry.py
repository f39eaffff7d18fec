"""Mask generators by name: each pattern file registers one function (MaskConfig, S) -> AttnMask."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lcab.config import MaskConfig
    from lcab.masks.slices import AttnMask

Generator = Callable[["MaskConfig", int], "AttnMask"]
_GENERATORS: dict[str, Generator] = {}


def register(name: str) -> Callable[[Generator], Generator]:
    def wrap(fn: Generator) -> Generator:
        _GENERATORS[name] = fn
        return fn

    return wrap


def _load_patterns() -> None:
    from lcab.masks import patterns

    for mod in pkgutil.iter_modules(patterns.__path__):
        importlib.import_module(f"{patterns.__name__}.{mod.name}")


def names() -> list[str]:
    _load_patterns()
    return sorted(_GENERATORS)


def build(cfg: MaskConfig, seqlen: int) -> AttnMask:
    """The single source of a cell's mask; seeded by cfg.seed, so every rank builds the same one."""
    _load_patterns()
    if cfg.name not in _GENERATORS:
        raise ValueError(f"unknown mask '{cfg.name}'; known: {', '.join(sorted(_GENERATORS))}")
    return _GENERATORS[cfg.name](cfg, seqlen)
