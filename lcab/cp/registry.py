"""CP strategies by name, by explicit discovery: every module of lcab.cp.strategies is one
strategy, named as its file, whose Strategy subclass (defined in that module) carries the same
name. Names are listed without importing anything; a strategy's module is imported only when
asked for, and optional packages (yunchang, megatron, triton) are imported inside functions.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from lcab.config import ConfigError
from lcab.cp import strategies as _package
from lcab.cp.base import Strategy


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(_package.__path__) if not m.name.startswith("_"))


def get(name: str) -> Strategy:
    if name not in names():
        raise ConfigError(f"unknown cp strategy '{name}'; known: {', '.join(names())}")
    return _load(name)


@functools.cache
def _load(name: str) -> Strategy:
    module = importlib.import_module(f"{_package.__name__}.{name}")
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Strategy)
        and obj.__module__ == module.__name__
        and obj.name == name
    ]
    if len(found) != 1:
        raise ConfigError(
            f"lcab/cp/strategies/{name}.py must define one Strategy subclass with name = '{name}' "
            f"(found {len(found)})"
        )
    return found[0]()
