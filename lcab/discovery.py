"""One Python file per option: the registries of kernels and CP strategies find them this way.

Every module of a package (its name not starting with "_") is one option, named as its file, and
defines exactly one subclass of the family's base class whose `name` is that file's name. Names
are listed without importing anything; a module is imported only when its option is asked for,
so an option's optional packages are never imported for another's sake.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from types import ModuleType

from lcab.errors import ConfigError


class OneFileOptions:
    def __init__(self, package: ModuleType, base: type, kind: str) -> None:
        self.package, self.base, self.kind = package, base, kind  # kind: "kernel", "cp strategy"
        self.load = functools.cache(self._load)

    def names(self) -> list[str]:
        return sorted(
            m.name for m in pkgutil.iter_modules(self.package.__path__) if not m.name.startswith("_")
        )

    def cls(self, name: str) -> type:
        if name not in self.names():
            raise ConfigError(f"unknown {self.kind} '{name}'; known: {', '.join(self.names())}")
        return self.load(name)

    def _load(self, name: str) -> type:
        module = importlib.import_module(f"{self.package.__name__}.{name}")
        found = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, self.base)
            and obj.__module__ == module.__name__
            and obj.name == name
        ]
        if len(found) != 1:
            path = self.package.__name__.replace(".", "/")
            raise ConfigError(
                f"{path}/{name}.py must define one {self.base.__name__} subclass with name = '{name}' "
                f"(found {len(found)})"
            )
        return found[0]
