"""OmegaConf resolvers that presets and cluster configs use; registered before Hydra composes."""

from __future__ import annotations

from omegaconf import OmegaConf

from lcab.config import parse_seqlen


def _world(cluster) -> int:
    if cluster.name == "local":
        return int(cluster.nproc)
    return int(cluster.nodes) * int(cluster.tasks_per_node)


def per_gpu(tokens: str, *, _root_) -> str:
    """Weak scaling: `seqlen: ${lcab_per_gpu:8k}` is 8K tokens times the cell's world size."""
    return str(parse_seqlen(tokens) * _world(_root_.cluster))


def cp_ranks(n: int, *, _root_) -> int:
    """`cluster.nproc: ${lcab_cp_ranks:2}`: n ranks for a CP strategy, one process for cp=none."""
    return 1 if _root_.cp.name == "none" else int(n)


def register() -> None:
    from lcab.launch import slurm

    slurm.register_resolvers()
    for name, fn in (("lcab_per_gpu", per_gpu), ("lcab_cp_ranks", cp_ranks)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
