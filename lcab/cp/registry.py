"""CP strategies by name, by explicit discovery: every module of lcab.cp.strategies is one
strategy, named as its file, whose Strategy subclass (defined in that module) carries the same
name. Names are listed without importing anything; a strategy's module is imported only when
asked for, and optional packages (yunchang, megatron, triton) are imported inside functions.
"""

from __future__ import annotations

import functools

from lcab.cp import strategies as _package
from lcab.cp.base import Strategy
from lcab.discovery import OneFileOptions

_options = OneFileOptions(_package, Strategy, "cp strategy")


def names() -> list[str]:
    return _options.names()


@functools.cache
def _instance(name: str) -> Strategy:
    return _options.load(name)()


def get(name: str) -> Strategy:
    _options.cls(name)  # an unknown name: one line listing the known ones
    return _instance(name)
