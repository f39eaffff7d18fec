"""Process groups for a CP topology: the (ring x ulysses) mesh from a torch DeviceMesh, extra
groups (dK/dV rings, double-ring windows) by enumeration; megatron's parallel_state on request.

Creating groups is collective over all ranks, so every rank builds every family in the same
order. Each cell gets its own name -> group mapping (cell_groups); the torch groups behind it
are cached per process by their exact rank layout and reused by later cells of that layout.
"""

from __future__ import annotations

import torch.distributed as dist

from lcab.kernels.base import Unavailable

_CACHE: dict = {}


def mesh_groups(world: int, ulysses: int, ring: int, intra: bool, device_type: str) -> dict:
    key = ("mesh", world, ulysses, ring, intra, device_type)
    if key not in _CACHE:
        from torch.distributed.device_mesh import init_device_mesh

        shape, names = (
            ((ring, ulysses), ("ring", "ulysses")) if intra else ((ulysses, ring), ("ulysses", "ring"))
        )
        mesh = init_device_mesh(device_type, shape, mesh_dim_names=names)
        _CACHE[key] = {"ring": mesh.get_group("ring"), "uly": mesh.get_group("ulysses"), "mesh": mesh}
    return _CACHE[key]


def family(lists: list[list[int]], tag: str = ""):
    """The group of this rank among disjoint rank lists (each list becomes one group)."""
    key = ("family", tag, tuple(tuple(x) for x in lists))
    if key not in _CACHE:
        me = dist.get_rank()
        mine = None
        for ranks in lists:
            g = dist.new_group(ranks)
            if me in ranks:
                mine = g
        _CACHE[key] = mine
    return _CACHE[key]


def cell_groups(
    source: str, world: int, ulysses: int, ring: int, intra: bool, device_type: str, families: dict
) -> dict:
    """This cell's groups by name: the mesh's (or megatron's) ring and Ulysses groups, then the
    strategy's extra families (name -> disjoint rank lists) that the base does not provide."""
    if source == "megatron":
        out = dict(megatron_groups(ulysses, ring))
    else:
        out = dict(mesh_groups(world, ulysses, ring, intra, device_type))
    for name, lists in families.items():
        if out.get(name) is None:
            out[name] = family(lists, tag=name)
    return out


def megatron_groups(ulysses: int, ring: int) -> dict:
    """Megatron's CP group (ring) from parallel_state; Ulysses beyond 1 has no Megatron group."""
    try:
        from megatron.core import parallel_state as ps
    except ImportError as exc:
        raise Unavailable(f"cp.groups=megatron needs megatron-core ({exc})") from exc
    if ulysses != 1:
        raise Unavailable("cp.groups=megatron provides a context-parallel ring group only (ulysses degree 1)")
    if not ps.model_parallel_is_initialized():
        ps.initialize_model_parallel(context_parallel_size=ring)
    return {"ring": ps.get_context_parallel_group(), "uly": None}


def clear() -> None:
    _CACHE.clear()
