"""Which strategy when: the model's best candidate per (mask, world) and how far the runner-up
strategy is behind, with the cluster and kernel it assumes."""

from __future__ import annotations

from lcab.kernels.base import ShapeSpec
from lcab.predict.calibrate import Calibration
from lcab.predict.cluster import ClusterModel
from lcab.predict.planonly import build_mask
from lcab.predict.recommend import recommend


def table(
    masks: list[str],
    worlds: list[int],
    per_gpu: int,
    shape: ShapeSpec,
    cluster: ClusterModel,
    calib: Calibration,
    kernel: str,
    mode: str,
) -> list[str]:
    lines = [
        "| mask | GPUs | best (shard, degrees) | TFLOPs/s/GPU | its bottleneck | next strategy | its TFLOPs/s/GPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in masks:
        for w in worlds:
            preds = recommend(build_mask(m, per_gpu * w), w, shape, cluster, calib, kernel, mode).predictions
            best = preds[0]
            nxt = next((p for p in preds if p.strategy != best.strategy), None)
            d = best.degrees
            cand = f"{best.strategy} ({best.shard}, U{d['ulysses']}xR{d['ring']})"
            tail = f"{nxt.strategy} ({nxt.shard}) | {nxt.tflops_per_gpu:.0f}" if nxt else "- | -"
            lines.append(f"| {m} | {w} | {cand} | {best.tflops_per_gpu:.0f} | {best.bottleneck} | {tail} |")
    return lines
