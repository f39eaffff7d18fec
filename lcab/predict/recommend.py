"""Every candidate (strategy, shard, degrees) for a cluster, mask, length and world, predicted and
ranked by time. Candidates the strategy's own checks reject (head counts, divisibility) are left
out with their reason."""

from __future__ import annotations

from dataclasses import dataclass

from lcab.errors import ConfigError, Unsupported
from lcab.kernels.base import ShapeSpec
from lcab.masks.slices import AttnMask
from lcab.predict.calibrate import Calibration
from lcab.predict.cluster import ClusterModel
from lcab.predict.kernel_fit import mask_work
from lcab.predict.model import Prediction, predict
from lcab.predict.planonly import Candidate, degrees, plan_cell

SHARDS = ("zigzag", "balanced")


def _pow2_divisors(n: int) -> list[int]:
    return [d for d in (2**i for i in range(1, 11)) if d < n and n % d == 0]


def candidates(world: int, shape: ShapeSpec, gpus_per_node: int) -> tuple[list[Candidate], list[str]]:
    """The paper's strategies at every degree lcab can run for this world and shape."""
    cands = [Candidate("ulysses", "zigzag", ulysses=world)]
    for shard in SHARDS:
        cands += [Candidate("ring", shard), Candidate("ring_allgather", shard)]
        cands += [Candidate("usp", shard, ulysses=u) for u in _pow2_divisors(world) if u <= gpus_per_node]
        cands.append(Candidate("double_ring", shard, ulysses=1))
    ok, dropped = [], []
    for c in cands:
        try:
            degrees(c, shape, world)
            ok.append(c)
        except (ConfigError, Unsupported) as e:
            dropped.append(f"{c.strategy} {c.shard} U={c.ulysses}: {e}")
    return ok, dropped


@dataclass
class Ranked:
    predictions: list[Prediction]
    dropped: list[str]


def recommend(
    mask: AttnMask,
    world: int,
    shape: ShapeSpec,
    cluster: ClusterModel,
    calib: Calibration,
    kernel: str,
    mode: str,
) -> Ranked:
    fits = calib.kernel_fits(kernel, mode)
    if fits is None:
        raise ConfigError(
            f"no fit for kernel {kernel} in the {calib.device} calibration (has {', '.join(calib.fits)})"
        )
    whole = mask_work(mask, kernel)
    cands, dropped = candidates(world, shape, cluster.gpus_per_node)
    preds = []
    for c in cands:
        try:
            plan = plan_cell(mask, c, shape, world)
        except (ConfigError, Unsupported) as e:
            dropped.append(f"{c.strategy} {c.shard}: {e}")
            continue
        preds.append(predict(plan, cluster, fits, kernel, mode, whole))
    preds.sort(key=lambda p: p.time_ms)
    return Ranked(preds, dropped)
