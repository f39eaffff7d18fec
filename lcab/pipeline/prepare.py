"""The cell pipeline's first half, written once for every path: kernel -> strategy -> shape ->
degrees -> memory -> mask -> shard -> this rank's plan. Nothing here communicates, so a cell
that cannot run raises (ConfigError / Unsupported / Unavailable / oom) before any collective.
A single-device cell is the identity strategy `none` at world 1."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from lcab import kernels
from lcab.config import mask_config, typed
from lcab.cp import registry
from lcab.cp.base import RankPlan, RunCtx, Strategy, Topology
from lcab.cp.comm import Comm
from lcab.cp.sharding import Shard
from lcab.cp.timer import ComputeTimer
from lcab.errors import Unavailable, Unsupported
from lcab.harness import memory
from lcab.harness.shape import shape_spec
from lcab.kernels.base import Kernel, ShapeSpec
from lcab.masks import build as build_mask
from lcab.masks.slices import AttnMask
from lcab.plan import Cell


@dataclass
class Prepared:
    strategy: Strategy
    kernel: Kernel
    mask: AttnMask
    shape: ShapeSpec  # global: the strategy's plan splits heads and tokens
    shard: Shard  # the layout the harness cuts and gathers (the plan's)
    topo: Topology
    plan: RankPlan


def load_kernel(config: Mapping) -> Kernel:
    """The cell's kernel adapter, made with its options (ConfigError for an unknown name)."""
    return kernels.create(config["kernel"]["name"], config["kernel"])


def cell_mask(config: Mapping) -> AttnMask:
    return build_mask(mask_config(config["mask"]), config["seqlen"])


def emulated_world(config: Mapping) -> int:
    """W of cp.emulate=W (0: not emulated)."""
    return typed("cp", config["cp"]).emulate


def prepare(
    cell: Cell,
    device: torch.device,
    rank: int,
    world: int,
    kernel: Kernel | None = None,
    *,
    emulated: bool = False,
) -> Prepared:
    """Everything that needs no communication for `rank` of `world`. Emulated (cp.emulate): all
    ranks on this device, the whole sequence's tensors checked (rank_plan gives the other ranks'
    plans)."""
    c, b = cell.config, cell.config["bench"]
    cp, mode = c["cp"], b["mode"]
    kernel = kernel or load_kernel(c)
    ok, why = kernel.available(device)
    if not ok:
        raise Unavailable(why)
    strategy = registry.get(cp["name"])
    if emulated and strategy.cannot_emulate:
        raise Unsupported(strategy.cannot_emulate)
    if mode != "fwd" and not kernel.has_backward(device.type):
        raise Unsupported(f"{kernel.name} has no backward on {device.type}")
    shape = shape_spec(c, device)
    deg = strategy.check(cp, shape, world)
    # What cannot fit is decided before it is allocated (lcab.harness.memory): first what the
    # rank needs whatever the mask, then, with the mask built, what the strategy declares.
    flush = b["l2_flush_mb"] * 2**20 if b["l2_flush"] and device.type == "cuda" else 0
    # Emulation holds the whole sequence's step (the monolithic kernel runs beside the ranks):
    # its tensors are checked as one rank's of world 1.
    memory.check(strategy.footprint(shape, c["seqlen"], mode, 1 if emulated else world, flush), device)
    mask = cell_mask(c)
    kernel.check(mask, shape)
    need = None if emulated else strategy.mask_footprint(kernel, mask, shape, mode, b["verify"], flush)
    if need is not None:
        memory.check(need, device)
    shard = strategy.shard(cp, mask, world)
    # Where Ulysses groups sit on the mesh; a strategy whose schema lacks it has one axis only.
    topo = Topology(world, rank, deg, intra=getattr(strategy.settings(cp), "ulysses_intra_node", True))
    plan = strategy.plan(mask, shard, topo, kernel, shape)
    if mode != "fwd" and plan.no_backward:  # peers whose backward is missing
        raise Unsupported(plan.no_backward)
    # A peer may lay tokens out its own way (yunchang's extract_local); lcab cuts and gathers that.
    return Prepared(strategy, kernel, mask, shape, plan.shard, topo, plan)


def rank_plan(p: Prepared, rank: int) -> RankPlan:
    """Another rank's plan of the same cell (emulation builds every rank's on one device)."""
    if rank == p.topo.rank:
        return p.plan
    return p.strategy.plan(p.mask, p.shard, p.topo.at(rank), p.kernel, p.shape)


def open_cell(p: Prepared, cp: Mapping, device: torch.device) -> RunCtx:
    """This cell's process groups (collective: every rank calls it) with a fresh comm and timer."""
    groups = p.strategy.process_groups(p.topo, typed("cp", cp).groups, device)
    return RunCtx(Comm(), ComputeTimer(device), groups)
