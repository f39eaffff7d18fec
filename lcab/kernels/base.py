"""The kernel adapter contract (the registry is lcab.kernels.registry).

Layout everywhere in lcab: q [B, S, Hq, D], k and v [B, S, Hkv, D] (Hq % Hkv == 0, GQA),
out [B, S, Hq, D], lse [B, Hq, S] float32, natural log, softmax scale 1/sqrt(D).
A kernel either expresses a mask exactly in one of its forms or raises Unsupported: it
never substitutes another mask or another kernel.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lcab.errors import Unavailable, Unsupported  # noqa: F401  (re-exported for the adapters)
from lcab.masks.slices import AttnMask

AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
# Per-step functions for context parallelism (no autograd): forward (q, k, v) -> (out, lse), and
# a FlashAttention-style backward (dout, q, k, v, out, lse) -> (dq, dk, dv) that takes the GLOBAL
# out and lse, so a ring can sum one step's dq/dk/dv into gradients of the whole attention.
StepFwd = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
StepBwd = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Capabilities:
    """What the pipeline reads before it prepares anything: `available` (devices), `check`
    (dtypes), `has_backward` (backward, backward_devices), `has_steps` (steps: whether a CP
    strategy that merges per-step LSEs can use the kernel) and, for adapters whose mask form
    is a choice, the form (sdpa: "dense" in mask_forms or not)."""

    devices: tuple[str, ...]  # "cpu", "cuda"
    dtypes: tuple[str, ...]  # short names: bf16, fp16, fp32, fp64
    # How masks reach the kernel, e.g. ("dense",) or ("causal_flag", "varlen", "window").
    mask_forms: tuple[str, ...]
    backward: bool
    # Where the backward exists when that is narrower than `devices` (flex: CUDA only); None: all.
    backward_devices: tuple[str, ...] | None = None
    # Devices with CP step functions (step_fns: a forward that returns the LSE, a backward from
    # the global out/lse), which the tiled-LSE strategies (ring, ring_allgather, usp) need.
    steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class KernelOptions:
    """A kernel's own options from the kernel config; an adapter with options subclasses this
    (flex: FlexOptions). Keys of the config that are not fields here are not this kernel's."""


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
    """Base adapter. Subclasses set name/capabilities/packages and implement prepare().

    An adapter is made per cell (lcab.kernels.registry.create) with its typed options and is
    not changed afterwards; process-wide caches of built artefacts live in the adapter module."""

    name: str = ""
    capabilities: Capabilities
    packages: tuple[str, ...] = ()  # distributions whose versions go into the record
    summary: str = ""
    Options: type[KernelOptions] = KernelOptions

    def __init__(self, options: KernelOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def available(self, device: torch.device) -> tuple[bool, str]:
        if device.type not in self.capabilities.devices:
            return False, f"{self.name} runs on {'/'.join(self.capabilities.devices)}, not {device.type}"
        return True, ""

    def has_backward(self, device_type: str) -> bool:
        """Whether a backward runs on this device type: decided before any forward is computed."""
        c = self.capabilities
        return c.backward and (c.backward_devices is None or device_type in c.backward_devices)

    def has_steps(self, device_type: str) -> bool:
        """Whether step_fns exist on this device type: decided before any plan is built."""
        return device_type in self.capabilities.steps

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
        """Per-step (fwd, bwd) for CP strategies; kernels that declare `steps` override this.
        Rows of `mask` with no visible key must give out 0, lse -inf."""
        raise Unsupported(no_steps(self, shape.device.type))

    def versions(self) -> dict[str, str]:
        return package_versions(self.packages)


def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Installed version of each distribution, "absent" where it is not installed."""
    out = {}
    for pkg in packages:
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


def no_steps(kernel: Kernel, device_type: str) -> str:
    """Why a kernel cannot serve a strategy that merges per-step LSEs, from its capabilities."""
    where = f" on {device_type}" if kernel.capabilities.steps else ""
    return (
        f"{kernel.name} has no CP step functions{where} (a forward that returns the LSE and a "
        "backward from the global out/lse)"
    )


def scale(head_dim: int) -> float:
    return head_dim**-0.5
