"""The cell pipeline, one for every path (single device, every CP strategy on real ranks,
emulation, the self-check and the scripts):

    mask -> plan (lcab.pipeline.prepare) -> inputs -> step -> verify / timing -> metrics
    (lcab.pipeline.measure) -> Result (lcab.pipeline.cell, rows by lcab.results.outcome)

A single-device cell is the identity strategy `none` at world 1. The launcher (lcab.launch)
decides where a cell runs and calls `execute` (one process) or `execute_rank` (each rank)."""

from lcab.pipeline.cell import execute, execute_rank, refusal, single_process

__all__ = ["execute", "execute_rank", "refusal", "single_process"]
