"""Predict every ok CP cell of some stores and compare with what was measured: the cluster from
each row's environment (its GPU's preset; a real row's own coll_busbw in place of the preset's
links), the step kernel's constants from the calibration file, and only cells that file does not
list as fitted. One line per cell, then `median |error| X%, max |error| Y% over N cells`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lcab.errors import ConfigError
from lcab.predict import calibrate as cal
from lcab.predict import cluster as clusters
from lcab.predict.cells import Cell, read_cells
from lcab.predict.kernel_fit import mask_work
from lcab.predict.model import Prediction, predict
from lcab.predict.planonly import STRATEGIES, plan_cell


@dataclass
class Checked:
    cell: Cell
    pred: Prediction | None
    error: float | None  # predicted / measured - 1
    note: str = ""

    def line(self) -> str:
        c = self.cell
        if self.pred is None:
            return f"[skip] {c.label()}: {self.note}"
        return (
            f"[{self.error:+6.1%}] {c.label()}  measured {c.time_s * 1e3:.3f} ms  predicted "
            f"{self.pred.time_ms:.3f} ms  ({self.pred.bottleneck}){'  ' + self.note if self.note else ''}"
        )


def measured_busbw(cell: Cell) -> dict[str, float]:
    """collective -> median busbw (GB/s) a real row measured per kind in isolation."""
    per: dict[str, list[float]] = defaultdict(list)
    for kb in (cell.row.get("metrics", {}).get("coll_busbw") or {}).values():
        if kb.get("busbw_gbps"):
            per[str(kb.get("ops") or kb.get("op"))].append(float(kb["busbw_gbps"]))
    return {op: float(np.median(v)) for op, v in per.items()}


def check(cell: Cell, cluster_name: str | None, cal_path: Path | None, cals: dict) -> Checked:
    if cell.strategy not in STRATEGIES:
        return Checked(cell, None, None, f"cp={cell.strategy} is not modelled")
    try:
        cm = clusters.load(cluster_name) if cluster_name else clusters.for_device(cell.device, cell.world)
        if cm.kernels not in cals:
            cals[cm.kernels] = cal.load(cm.kernels, cal_path)
        calib = cals[cm.kernels]
    except ConfigError as e:
        return Checked(cell, None, None, str(e))
    if cell.key in calib.fitted_cells:
        return Checked(cell, None, None, "used for fitting")
    fits = calib.kernel_fits(cell.kernel, cell.mode)
    if fits is None:
        return Checked(cell, None, None, f"no {cell.mode} fit for kernel {cell.kernel} on {calib.device}")
    if not cell.emulated:
        cm = cm.with_measured(measured_busbw(cell))
    mask = cell.mask()
    try:
        plan = plan_cell(mask, cell.candidate, cell.spec(), cell.world)
    except (ConfigError, ValueError) as e:
        return Checked(cell, None, None, str(e))
    pred = predict(
        plan, cm, fits, cell.kernel, cell.mode, mask_work(mask, cell.kernel), emulated=cell.emulated
    )
    return Checked(cell, pred, pred.time_ms / (cell.time_s * 1e3) - 1)


def validate(
    stores: list[str], cluster_name: str | None = None, cal_path: Path | None = None
) -> list[Checked]:
    cells = [c for c in read_cells(stores) if c.strategy != "none"]
    if not cells:
        raise ConfigError(f"no ok CP cells in {' '.join(stores)}")
    cals: dict = {}
    return [check(c, cluster_name, cal_path, cals) for c in sorted(cells, key=lambda c: c.label())]


def summary(checked: list[Checked]) -> str:
    errs = np.array([abs(c.error) for c in checked if c.error is not None])
    if errs.size == 0:
        return "median |error| -, max |error| - over 0 cells"
    return f"median |error| {np.median(errs):.1%}, max |error| {errs.max():.1%} over {errs.size} cells"
