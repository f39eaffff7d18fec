"""Process start per cluster kind; a cell's Result comes back to the caller (rank 0)."""

from __future__ import annotations

from lcab.plan import Cell
from lcab.results.schema import Result


def run_cell(cell: Cell) -> Result:
    if cell.config["world"] == 1 and cell.config["cp"]["name"] == "none":
        from lcab.execute import execute

        return execute(cell)
    from lcab.launch.distributed import run_distributed

    return run_distributed(cell)
