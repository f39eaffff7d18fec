"""Predicted TFLOPs/s per GPU against world size (weak scaling: tokens per GPU fixed), the best
candidate of each strategy at each world, and its figure."""

from __future__ import annotations

from pathlib import Path

from lcab.kernels.base import ShapeSpec
from lcab.predict.calibrate import Calibration
from lcab.predict.cells import mask_of
from lcab.predict.cluster import ClusterModel
from lcab.predict.planonly import build_mask
from lcab.predict.recommend import recommend

WORLDS = (8, 16, 32, 64, 128, 256, 512, 1024)


def sweep(
    mask_name: str | tuple,
    per_gpu: int,
    worlds: list[int],
    shape: ShapeSpec,
    cluster: ClusterModel,
    calib: Calibration,
    kernel: str,
    mode: str,
) -> list[dict]:
    """One row per (world, strategy): its best candidate (fastest shard and degrees). mask_name:
    an option name (lcab/conf/mask) or a row's mask values as sorted (key, value) pairs."""
    rows = []
    for w in worlds:
        if isinstance(mask_name, tuple):
            mask = mask_of(mask_name, per_gpu * w)
            mask_name_text = dict(mask_name)["name"]
        else:
            mask = build_mask(mask_name, per_gpu * w)
            mask_name_text = mask_name
        best: dict[str, dict] = {}
        for p in recommend(mask, w, shape, cluster, calib, kernel, mode).predictions:
            if p.strategy not in best:
                best[p.strategy] = {
                    **p.to_dict(),
                    "mask": mask_name_text,
                    "seqlen": per_gpu * w,
                    "kernel": kernel,
                }
        rows += sorted(best.values(), key=lambda r: r["time_ms"])
    return rows


def figure(rows: list[dict], path: Path, title: str) -> Path:
    """Lines of TFLOPs/s per GPU vs world, one per strategy (log2 x axis), as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for strat in sorted({r["strategy"] for r in rows}):
        pts = sorted((r["world"], r["tflops_per_gpu"]) for r in rows if r["strategy"] == strat)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=strat)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("GPUs (tokens per GPU fixed)")
    ax.set_ylabel("predicted TFLOPs/s per GPU")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=120)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return path.with_suffix(".png")
