"""The H100 preset's predictions beside the paper's measured CP numbers (ANCHORS.md section 5:
8 and 64 GPUs, 8K tokens per GPU, fwd, TFLOPs/s per GPU): per-cell ratio and the rank
correlation of the strategies' order. Nothing here is fitted to these numbers."""

from __future__ import annotations

import numpy as np

from lcab.kernels.base import ShapeSpec
from lcab.predict.calibrate import Calibration
from lcab.predict.cluster import ClusterModel
from lcab.predict.planonly import build_mask
from lcab.predict.recommend import recommend

# ANCHORS.md section 5 (read off the paper's charts, about +-5) and, for 64 GPUs, MagiAttention's
# published cp_benchmark (section 6), which the paper's 64-GPU ring_p2p (28) matches.
# lcab name <- paper name: ulysses, ring <- ring_p2p, ring_allgather, usp, double_ring <- loongtrain.
MEASURED = {
    ("full", 8): {"ulysses": 605, "ring": 511, "ring_allgather": 606, "usp": 580, "double_ring": 578},
    ("causal_document", 8): {
        "ulysses": 278,
        "ring": 89,
        "ring_allgather": 288,
        "usp": 260,
        "double_ring": 259,
    },
    ("causal_document", 64): {
        "ulysses": 163,
        "ring": 28,
        "ring_allgather": 180,
        "usp": 192,
        "double_ring": 192,
    },
}
# The paper's CP masks are its long-document variants (lcab/conf/experiment/paper_cp.yaml).
LCAB_MASK = {"full": "full", "causal_document": "causal_document_long"}
PER_GPU = 8192


def compare(shape: ShapeSpec, cluster: ClusterModel, calib: Calibration, kernel: str) -> list[dict]:
    """One row per (mask, world, strategy): the strategy's best predicted candidate and the paper's number."""
    from scipy.stats import spearmanr

    out = []
    for (mask_name, world), paper in MEASURED.items():
        mask = build_mask(LCAB_MASK[mask_name], PER_GPU * world)
        best: dict = {}
        zig: dict = {}  # the paper's layout: zigzag, no per-mask balancing
        for p in recommend(mask, world, shape, cluster, calib, kernel, "fwd").predictions:
            best.setdefault(p.strategy, p)
            if p.shard == "zigzag":
                zig.setdefault(p.strategy, p)
        names = [s for s in paper if s in best]
        meas = [paper[s] for s in names]

        def rho(d: dict, names: list[str] = names, meas: list[int] = meas) -> float:
            return float(spearmanr([d[s].tflops_per_gpu for s in names], meas).statistic)

        for s in names:
            p = best[s]
            out.append(
                {
                    "mask": mask_name,
                    "lcab_mask": LCAB_MASK[mask_name],
                    "world": world,
                    "strategy": s,
                    "candidate": f"{p.shard} U{p.degrees['ulysses']}xR{p.degrees['ring']}",
                    "predicted": round(p.tflops_per_gpu, 1),
                    "paper": paper[s],
                    "ratio": round(p.tflops_per_gpu / paper[s], 2),
                    "bottleneck": p.bottleneck,
                    "zigzag": round(zig[s].tflops_per_gpu, 1),
                    "zigzag_ratio": round(zig[s].tflops_per_gpu / paper[s], 2),
                    "spearman": round(rho(best), 2),
                    "spearman_zigzag": round(rho(zig), 2),
                }
            )
    return out


def markdown(rows: list[dict]) -> list[str]:
    lines = [
        "| mask | GPUs | strategy | best candidate | predicted | paper | predicted / paper | bottleneck "
        "| predicted, zigzag | zigzag / paper |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mask']} | {r['world']} | {r['strategy']} | {r['candidate']} | {r['predicted']} | "
            f"{r['paper']} | {r['ratio']} | {r['bottleneck']} | {r['zigzag']} | {r['zigzag_ratio']} |"
        )
    lines.append("")
    for key in dict.fromkeys((r["mask"], r["world"]) for r in rows):
        sub = [r for r in rows if (r["mask"], r["world"]) == key]
        ratios = np.array([r["ratio"] for r in sub])
        zr = np.array([r["zigzag_ratio"] for r in sub])
        lines.append(
            f"- {key[0]} at {key[1]} GPUs: Spearman rank correlation {sub[0]['spearman']} (zigzag only: "
            f"{sub[0]['spearman_zigzag']}), ratio median {np.median(ratios):.2f} (range {ratios.min():.2f}.."
            f"{ratios.max():.2f}; zigzag only {np.median(zr):.2f}, {zr.min():.2f}..{zr.max():.2f})"
        )
    return lines
