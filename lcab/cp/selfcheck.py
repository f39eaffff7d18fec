"""Numerics of a CP strategy against the single-process fp64 reference, inside a live process
group: one forward + backward through the cell pipeline (lcab.pipeline), every rank's output and
gradients gathered to rank 0 and judged by lcab.harness.verify's rule. Used by the tests (many
cases in one pool) and handy by hand.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

import lcab
from lcab.pipeline.measure import cell_inputs, check_numerics
from lcab.pipeline.prepare import open_cell, prepare
from lcab.plan import Cell


def _option_defaults(cp: str) -> dict:
    """The degrees and switches the strategy's own option file (lcab/conf/cp/<name>.yaml) sets."""
    path = Path(lcab.__file__).parent / "conf" / "cp" / f"{cp}.yaml"
    if not path.exists():
        return {}
    opts = OmegaConf.to_container(OmegaConf.load(path))
    return {
        k: v
        for k, v in opts.items()
        if k in ("ulysses_degree", "ring_degree", "windows", "ulysses_intra_node")
    }


def case_config(
    cp: str,
    mask: str = "causal",
    seqlen: int = 128,
    shard: str = "zigzag",
    kernel: str = "torch",
    heads: tuple[int, int] = (4, 2),
    head_dim: int = 16,
    dtype: str = "fp64",
    world: int = 2,
    mode: str = "fwd_bwd",
    **cp_opts,
) -> dict:
    """A resolved cell config (the subset the cell pipeline reads) for one CP case."""
    mask_cfg = {"name": mask, "seed": 0, "window": 17, "sparse_block": 16, "density": 0.5, "block": 16}
    cp_cfg = {
        "name": cp,
        "shard": shard,
        "ulysses_degree": 0,
        "ring_degree": 0,
        "windows": 0,
        "ulysses_intra_node": True,
        "groups": "mesh",
        "emulate": 0,
    }
    cp_cfg.update(_option_defaults(cp), shard=shard)
    cp_cfg.update(cp_opts)
    return {
        "kernel": {"name": kernel},
        "cp": cp_cfg,
        "mask": mask_cfg,
        "shape": {
            "batch": 1,
            "heads_q": heads[0],
            "heads_kv": heads[1],
            "head_dim": head_dim,
            "dtype": dtype,
        },
        "bench": {
            "mode": mode,
            "seed": 0,
            "device": "cpu",
            "verify": True,
            "warmup": 0,
            "iters": 1,
            "l2_flush": False,
            "l2_flush_mb": 0,
        },
        "seqlen": seqlen,
        "world": world,
    }


def check_case(config: dict) -> dict | None:
    """Run on every rank; rank 0 gets {passed, ratios, errors, calls (per rank), ...}."""
    cell = Cell(config, "selfcheck")
    device = torch.device(config["bench"]["device"])
    prep = prepare(cell, device, dist.get_rank(), dist.get_world_size())
    run = open_cell(prep, config["cp"], device)
    glob, inputs = cell_inputs(prep, config["bench"]["seed"])
    fn = prep.strategy.step_fn(prep.plan, run)
    run.comm.stats.reset()
    v = check_numerics(fn, inputs, glob, prep, config["bench"]["mode"] != "fwd")
    calls = [None] * dist.get_world_size()
    dist.all_gather_object(calls, dict(run.comm.stats.calls))  # the gather to rank 0 is not counted
    if v is None:
        return None
    return {
        "passed": v.passed,
        "failures": v.failures(),
        "ratios": v.ratios,
        "errors": v.errors,
        "calls": calls,
        "pad_tokens": prep.shard.notes["pad_tokens"],
        "kv_replicas": prep.topo.deg.kv_replicas,
        "degrees": (prep.topo.deg.ulysses, prep.topo.deg.ring, prep.topo.deg.windows),
    }


def check_cases(configs: list[dict]) -> list:
    """Many cases in one task; a case that raises gives its message instead of a result."""
    out = []
    for c in configs:
        try:
            out.append(check_case(c))
        except Exception as exc:
            # Deterministic failures (checks before any collective) happen on every rank alike.
            out.append({"exception": f"{type(exc).__name__}: {exc}"} if dist.get_rank() == 0 else None)
    return out
