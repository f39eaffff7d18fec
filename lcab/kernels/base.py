"""The kernel adapter contract and the registry.

Layout everywhere in lcab: q [B, S, Hq, D], k and v [B, S, Hkv, D] (Hq % Hkv == 0, GQA),
out [B, S, Hq, D], lse [B, Hq, S] float32, natural log, softmax scale 1/sqrt(D).
A kernel either expresses a mask exactly in one of its forms or raises Unsupported: it
never substitutes another mask or another kernel.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcab.masks.slices import AttnMask

AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
# Per-step functions for context parallelism (no autograd): forward (q, k, v) -> (out, lse), and
# a FlashAttention-style backward (dout, q, k, v, out, lse) -> (dq, dk, dv) that takes the GLOBAL
# out and lse, so a ring can sum one step's dq/dk/dv into gradients of the whole attention.
StepFwd = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
StepBwd = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class Unsupported(Exception):
    """This kernel cannot express this mask / shape / dtype; the message says why."""


class Unavailable(Exception):
    """The kernel's package or device support is missing; the message says what."""


@dataclass(frozen=True)
class Capabilities:
    devices: tuple[str, ...]  # "cpu", "cuda"
    dtypes: tuple[str, ...]  # short names: bf16, fp16, fp32, fp64
    # How masks reach the kernel, e.g. ("dense",) or ("causal_flag", "varlen", "window").
    mask_forms: tuple[str, ...]
    gqa: bool  # takes Hkv < Hq without replicating K/V
    backward: bool
    returns_lse: bool
    # Where the backward exists when that is narrower than `devices` (flex: CUDA only); None: all.
    backward_devices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ShapeSpec:
    """Everything but the sequence lengths, which come from the mask (seqlen_q x seqlen_k)."""

    batch: int
    heads_q: int
    heads_kv: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device


class Kernel:
    """Base adapter. Subclasses set name/capabilities/packages and implement prepare()."""

    name: str = ""
    capabilities: Capabilities
    packages: tuple[str, ...] = ()  # distributions whose versions go into the record
    summary: str = ""

    def configure(self, **options: object) -> Kernel:
        """Kernel-specific knobs from KernelConfig (e.g. block_size, compile); unknown keys are kept.

        Registered kernels are shared instances: the harness configures one before prepare().
        """
        self.options = dict(options)
        return self

    def option(self, key: str, default: object = None) -> object:
        return getattr(self, "options", {}).get(key, default)

    def available(self, device: torch.device) -> tuple[bool, str]:
        if device.type not in self.capabilities.devices:
            return False, f"{self.name} runs on {'/'.join(self.capabilities.devices)}, not {device.type}"
        return True, ""

    def has_backward(self, device_type: str) -> bool:
        """Whether a backward runs on this device type: decided before any forward is computed."""
        c = self.capabilities
        return c.backward and (c.backward_devices is None or device_type in c.backward_devices)

    def working_set(self, mask: AttnMask, shape: ShapeSpec, mode: str) -> int:
        """Peak bytes one step of `mode` allocates beyond q, k, v, dout, out and the gradients
        (lcab.harness.memory counts those), for the memory check before anything is allocated.
        Raise Unsupported here, as prepare() would, when the mask cannot be expressed.

        Default, for a kernel that declares nothing: conservative, an eager kernel that
        materialises every score and keeps several such tensors for its backward."""
        from lcab.harness import memory

        return memory.materialised(mask, shape, mode, memory.CONSERVATIVE)

    def check(self, mask: AttnMask, shape: ShapeSpec) -> None:
        """Raise Unsupported for dtype/shape; mask expressibility is checked in prepare()."""
        short = {v: k for k, v in DTYPE_NAMES.items()}[shape.dtype]
        if short not in self.capabilities.dtypes:
            raise Unsupported(f"{self.name} does not take dtype {short}")

    def prepare(self, mask: AttnMask, shape: ShapeSpec) -> AttnFn:
        """Build everything mask-dependent (outside timing) and return (q, k, v) -> (out, lse)."""
        raise NotImplementedError

    def step_fns(self, mask: AttnMask, shape: ShapeSpec) -> StepFns:
        """Per-step (fwd, bwd) for CP strategies; kernels that return an LSE and expose a step
        backward override this. Rows of `mask` with no visible key must give out 0, lse -inf."""
        raise Unsupported(f"{self.name} returns no LSE / has no step backward (needed under CP)")

    def versions(self) -> dict[str, str]:
        out = {}
        for pkg in self.packages:
            try:
                out[pkg] = importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                out[pkg] = "absent"
        return out


@dataclass(frozen=True)
class StepFns:
    fwd: StepFwd
    bwd: StepBwd
    form: str = ""  # how the step's mask reached the kernel, for the record


DTYPE_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}

_KERNELS: dict[str, Kernel] = {}


def register(cls: type[Kernel]) -> type[Kernel]:
    _KERNELS[cls.name] = cls()
    return cls


def _load() -> None:
    from lcab import kernels

    for mod in pkgutil.iter_modules(kernels.__path__):
        if mod.name not in ("base", "__init__"):
            importlib.import_module(f"{kernels.__name__}.{mod.name}")


def get(name: str) -> Kernel:
    _load()
    if name not in _KERNELS:
        raise KeyError(f"unknown kernel '{name}'; known: {', '.join(sorted(_KERNELS))}")
    return _KERNELS[name]


def names() -> list[str]:
    _load()
    return sorted(_KERNELS)


def scale(head_dim: int) -> float:
    return head_dim**-0.5
