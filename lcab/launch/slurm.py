"""Slurm through hydra-submitit-launcher: one Slurm job per cell, one Slurm task per rank.

lcab/conf/cluster/slurm.yaml maps cluster.* onto hydra.launcher.* (nodes, tasks per node, GPUs,
partition, account, time, setup lines). Inside each task, `export_env()` turns submitit's
JobEnvironment (global rank, number of tasks, hostnames) into the variables of PyTorch's
env:// rendezvous, which the distributed launcher then uses like torchrun's.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from lcab.config import ConfigError

# Set in the batch script before srun: a task that exits non-zero makes srun end the step,
# so no rank waits forever in a collective for a peer that is gone.
KILL_ON_BAD_EXIT = "export SLURM_KILL_BAD_EXIT=1"


def register_resolvers() -> None:
    resolvers = {
        "lcab_none_if_zero": lambda v: None if v in (0, "0", None) else int(v),
        "lcab_none_if_empty": lambda v: v or None,
        "lcab_slurm_setup": lambda lines: [KILL_ON_BAD_EXIT, *[str(x) for x in (lines or [])]],
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def in_submitit_task() -> bool:
    return "SUBMITIT_FOLDER" in os.environ and "SLURM_JOB_ID" in os.environ


def export_env(world: int) -> int:
    """Sets MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from the Slurm task; returns the rank."""
    if not in_submitit_task():
        raise ConfigError(
            "cluster=slurm runs cells as Slurm jobs through Hydra's submitit launcher: add -m "
            "(even for one point)"
        )
    from submitit.helpers import TorchDistributedEnvironment

    # The port derives from the job id, so concurrent jobs on one node do not collide; a
    # MASTER_PORT exported in the submitting shell (sbatch passes the env on) would make them.
    os.environ.pop("MASTER_PORT", None)
    # CUDA_VISIBLE_DEVICES is left as Slurm set it: the launcher picks the GPU by LOCAL_RANK.
    dist_env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if dist_env.world_size != world:
        raise ConfigError(
            f"the Slurm job has {dist_env.world_size} tasks but the cell's world is {world} "
            "(cluster.nodes x cluster.tasks_per_node)"
        )
    return dist_env.rank
