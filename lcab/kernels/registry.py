"""Kernels by name, by explicit discovery: every module of lcab.kernels.adapters is one kernel,
named as its file, whose Kernel subclass (defined in that module) carries the same name. Names
are listed without importing anything; an adapter's module is imported only when asked for, and
optional packages (flash_attn, flash_attn_interface, cudnn, triton) only inside its functions.
Helpers that several adapters share (sdpa_common, flash_family, flash_args, varlen_args, torch_eager) live
beside the adapters package, in lcab.kernels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from lcab.discovery import OneFileOptions
from lcab.kernels import adapters as _package
from lcab.kernels.base import Kernel

_options = OneFileOptions(_package, Kernel, "kernel")


def names() -> list[str]:
    return _options.names()


def create(name: str, kernel_cfg: Mapping | None = None) -> Kernel:
    """A fresh adapter with its typed options taken from `kernel_cfg` (the cell's kernel config;
    keys that are not this kernel's options, such as `name`, are not its business)."""
    cls = kernel_class(name)
    cfg = kernel_cfg or {}
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    return cls(cls.Options(**{k: v for k, v in cfg.items() if k in fields}))


def kernel_class(name: str) -> type[Kernel]:
    """The adapter class, for what it declares (capabilities, packages) without options."""
    return _options.cls(name)
