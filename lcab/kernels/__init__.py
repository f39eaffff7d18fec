"""Attention kernels: the adapter contract (base), one adapter per file (adapters/, found by
registry), and the helpers adapters share (sdpa_common, flash_family, flash_args, varlen_args, torch_eager).
`kernels.create(name, kernel_cfg)` makes a fresh, configured adapter; importing this package
imports no adapter and no optional package."""

from lcab.kernels.registry import create, kernel_class, names

__all__ = ["create", "kernel_class", "names"]
