"""The fitted constants and the cells they came from, in one file per kernel source
(lcab/predict/calibration/<cluster.kernels>.json) that validate and recommend read.

Fitted on single-device kernel rows (cp=none) of the cluster's GPU, and, where asked (--mono),
on the monolithic kernel times that cp.emulate rows record beside their CP time: those rows are
then listed as fitted and validation leaves them out entirely.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lcab.errors import ConfigError
from lcab.predict import cluster as clusters
from lcab.predict.cells import Cell, read_cells
from lcab.predict.kernel_fit import MODES, KernelFit, fit, mask_work

CAL_DIR = Path(__file__).resolve().parent / "calibration"


@dataclass
class Calibration:
    cluster_model: str
    device: str
    fits: dict[str, dict[str, KernelFit]]  # kernel -> mode -> fit
    fitted_cells: set[str]
    sources: list[str]

    def kernel_fits(self, kernel: str, mode: str = "fwd_bwd") -> dict[str, KernelFit] | None:
        """The fits a cell of `mode` needs (fwd_bwd: both), or None when one is missing."""
        f = self.fits.get(kernel) or {}
        need = MODES if mode == "fwd_bwd" else (mode,)
        return f if all(m in f for m in need) else None


def path_for(kernels: str, cal_dir: Path | None = None) -> Path:
    return (cal_dir or CAL_DIR) / f"{kernels}.json"


def samples(cells: list[Cell], gpu: str, mono: bool, only: str | None = None) -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = defaultdict(list)
    for c in cells:
        if gpu.lower() not in c.device.lower() or c.mode not in MODES:
            continue
        b, hq, _, d, _ = c.shape
        if c.strategy == "none" and c.world == 1:
            out[(c.kernel, c.mode)].append((mask_work(c.mask(), c.kernel), (hq, d, b), c.time_s, c.key))
        elif mono and c.emulated and c.mono_s and only in (None, c.strategy):
            out[(c.kernel, c.mode)].append(
                (mask_work(c.mask(), c.kernel), (hq, d, b), c.mono_s, c.key + ":mono_ms")
            )
    return out


def _mean_repeats(samples: list) -> list:
    """One sample per distinct call (repeated measurements of one kernel cell averaged), so a
    cell measured four times does not weigh four times in the fit; every repeat stays listed."""
    by: dict = defaultdict(list)
    for work, shape, sec, cell in samples:
        by[(work, shape)].append((sec, cell))
    return [
        (w, sh, float(np.mean([t for t, _ in v])), ",".join(c for _, c in v)) for (w, sh), v in by.items()
    ]


def calibrate(
    name: str,
    stores: list[str],
    mono_stores: list[str],
    out: Path | None = None,
    only: str | None = None,
    masks: list[str] | None = None,
    min_seqlen: int = 0,
) -> Path:
    """masks / min_seqlen: the kernel rows to fit on (the regime CP steps run in; a kernel's
    quirk on another mask, e.g. cuDNN's slow bidirectional-window backward, stays out)."""
    cm = clusters.load(name)

    def keep(cells: list[Cell]) -> list[Cell]:
        return [c for c in cells if (masks is None or c.mask_values_name in masks) and c.seqlen >= min_seqlen]

    groups = samples(keep(read_cells(stores)), cm.gpu, mono=False)
    for key, s in samples(keep(read_cells(mono_stores)), cm.gpu, mono=True, only=only).items():
        groups[key] += s
    if not groups:
        raise ConfigError(f"no ok kernel rows of a {cm.gpu} device in {' '.join(stores)}")
    fits: dict = defaultdict(dict)
    for (kernel, mode), s in sorted(groups.items()):
        s = _mean_repeats(s)
        if len(s) >= 3:  # three constants need three distinct calls
            fits[kernel][mode] = fit(cm.gpu, kernel, mode, s).to_dict()
    fitted = sorted(
        {c for k in fits.values() for f in k.values() for cs in f["cells"] for c in cs.split(",")}
    )
    doc = {
        "cluster_model": name,
        "device": cm.gpu,
        "model": "time(call) = c_call * calls + c_tile * tile FLOPs + c_row * query elements (lcab.predict.kernel_fit)",
        "selection": {"masks": masks or "all", "min_seqlen": min_seqlen},
        "sources": [*stores, *(f"{m} (mono_ms of {only or 'every'} cp.emulate row)" for m in mono_stores)],
        "fitted_cells": [c.split(":mono_ms")[0] for c in fitted],
        "fits": fits,
    }
    path = out or path_for(cm.kernels)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def load(kernels: str, path: Path | None = None) -> Calibration:
    p = path or path_for(kernels)
    if not p.is_file():
        raise ConfigError(
            f"no calibration {p}: run `python -m lcab.predict calibrate CLUSTER_MODEL STORE...`"
        )
    doc = json.loads(p.read_text())
    fits = {k: {m: KernelFit(**f) for m, f in ms.items()} for k, ms in doc["fits"].items()}
    return Calibration(doc["cluster_model"], doc["device"], fits, set(doc["fitted_cells"]), doc["sources"])
