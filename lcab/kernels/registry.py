"""Kernels by name, by explicit discovery: every module of lcab.kernels.adapters is one kernel,
named as its file, whose Kernel subclass (defined in that module) carries the same name. Names
are listed without importing anything; an adapter's module is imported only when asked for, and
optional packages (flash_attn, flash_attn_interface, cudnn, triton) only inside its functions.
Helpers that several adapters share (sdpa_common, flash_common, varlen_args, torch_eager) live
beside the adapters package, in lcab.kernels.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from collections.abc import Mapping

from lcab.config import ConfigError
from lcab.kernels import adapters as _package
from lcab.kernels.base import Kernel


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(_package.__path__) if not m.name.startswith("_"))


def create(name: str, kernel_cfg: Mapping | None = None) -> Kernel:
    """A fresh adapter with its typed options taken from `kernel_cfg` (the cell's kernel config;
    keys that are not this kernel's options, such as `name`, are not its business)."""
    cls = kernel_class(name)
    cfg = kernel_cfg or {}
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    return cls(cls.Options(**{k: v for k, v in cfg.items() if k in fields}))


def kernel_class(name: str) -> type[Kernel]:
    """The adapter class, for what it declares (capabilities, packages) without options."""
    if name not in names():
        raise ConfigError(f"unknown kernel '{name}'; known: {', '.join(names())}")
    return _load(name)


@functools.cache
def _load(name: str) -> type[Kernel]:
    module = importlib.import_module(f"{_package.__name__}.{name}")
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Kernel)
        and obj.__module__ == module.__name__
        and obj.name == name
    ]
    if len(found) != 1:
        raise ConfigError(
            f"lcab/kernels/adapters/{name}.py must define one Kernel subclass with name = '{name}' "
            f"(found {len(found)})"
        )
    return found[0]
