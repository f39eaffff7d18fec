"""lcab.report's view of the model: predicted beside measured for every CP cell of the stores,
and predicted TFLOPs/s per GPU vs world (8..1024) per strategy for the stores' CP mask."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from lcab.errors import ConfigError
from lcab.predict import calibrate as cal
from lcab.predict import cluster as clusters
from lcab.predict.cells import Cell, of_row
from lcab.predict.planonly import STRATEGIES, shape_spec
from lcab.predict.scaling import WORLDS, figure, sweep
from lcab.predict.validate import check, summary


def _cells(df: pd.DataFrame) -> list[Cell]:
    out = []
    for r in df.to_dict("records"):
        row = {k: r.get(k) for k in ("cell_id", "status", "config", "env", "metrics")}
        cell = of_row(row, str(r.get("source", "")))
        if cell is not None and cell.strategy in STRATEGIES:
            out.append(cell)
    return out


def tables(df: pd.DataFrame) -> list:
    """One table: each CP cell's measured and predicted time (lcab.predict validate's numbers)."""
    from lcab.report.tables import Table

    cells = _cells(df)
    if not cells:
        return []
    cals: dict = {}
    checked = [check(c, None, None, cals) for c in sorted(cells, key=lambda c: c.label())]
    if not any(c.pred for c in checked):  # e.g. CPU rows: no calibration ships for them
        return []
    frame = pd.DataFrame(
        {
            "measured ms": [c.cell.time_s * 1e3 for c in checked],
            "predicted ms": [c.pred.time_ms if c.pred else None for c in checked],
            "error %": [100 * c.error if c.error is not None else None for c in checked],
            "bottleneck / note": [c.pred.bottleneck if c.pred else c.note for c in checked],
        },
        index=[c.cell.label() for c in checked],
    )
    note = (
        f"lcab.predict (the cluster preset of each row's device, its calibration file; emulated "
        f"rows: compute only): {summary(checked)}."
    )
    return [Table("cp", "cp_predicted", "CP cells: predicted beside measured", frame, "cell", notes=[note])]


def figures(df: pd.DataFrame, fig_dir: Path) -> list:
    """Predicted weak scaling 8..1024 GPUs for the most common CP mask of the stores; nothing
    where the stores have no CP cell the model can calibrate (CPU rows: no shipped calibration)."""
    from lcab.report.figures import Figure

    cells = _cells(df)
    if not cells:
        return []
    mask_values, _ = Counter(c.mask_values for c in cells).most_common(1)[0]
    c = next(c for c in cells if c.mask_values == mask_values)
    try:
        cm = clusters.for_device(c.device, c.world)
        calib = cal.load(cm.kernels)
    except ConfigError:
        return []
    if calib.kernel_fits(c.kernel, c.mode) is None:
        return []
    per_gpu = c.seqlen // c.world
    rows = sweep(mask_values, per_gpu, list(WORLDS), shape_spec(*c.shape), cm, calib, c.kernel, c.mode)
    name = c.mask_values_name
    title = f"predicted, {cm.name}, {c.kernel}, {name}, {per_gpu} tokens per GPU, {c.mode}"
    png = figure(rows, fig_dir / "predict_scaling", title)
    desc = "lcab.predict's best candidate per strategy at each world size (weak scaling)"
    return [Figure("predict", "predict_scaling", title, png, png.with_suffix(".svg"), desc)]
