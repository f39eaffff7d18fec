"""Process start per cluster kind; a cell's Result comes back to the caller (rank 0)."""

from __future__ import annotations

from lcab.plan import Cell
from lcab.results.schema import Result


def run_cell(cell: Cell) -> Result:
    from lcab import pipeline

    if pipeline.single_process(cell):  # cp=none at world 1, or cp.emulate=W
        return pipeline.execute(cell)
    from lcab.launch.distributed import run_distributed

    return run_distributed(cell)
