"""Result rows from one or many stores into one pandas frame, one row per cell (the newest).

Columns: the row's own fields, every config/env/metrics key flattened with a dot
(`config.kernel.name`, `metrics.tflops`, per-rank lists stay lists), the raw dicts
(`config`, `env`, `metrics`), where the row came from (`source`, `order`), and short names the
tables and figures group by (kernel, mask, seqlen, mode, cp, shard, world, device, setup, mark).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

STORE_NAME = "results.jsonl"

# Table marks for statuses that carry no trustworthy number (ANCHORS.md section 1).
MARKS = {
    "oom": "E",
    "unsupported": "X",
    "unavailable": "-",
    "error": "ERR",
    "invalid": "INV",
    "interrupted": "INT",
}
MARK_LEGEND = {
    "E": "out of memory",
    "X": "unsupported (the kernel/strategy cannot express the cell)",
    "-": "unavailable (package or device missing)",
    "ERR": "error",
    "INV": "invalid (numerics failed or above the device peak)",
    "INT": "interrupted",
}


class NoResults(ValueError):
    """No store, or no rows, under the given paths."""


def find_stores(paths: Iterable[str | Path]) -> list[Path]:
    """Files named results.jsonl under directories, glob patterns, or direct file paths (in order)."""
    found: list[Path] = []
    for raw in paths:
        text = str(raw)
        if any(ch in text for ch in "*?["):
            hits = [Path(h) for h in sorted(glob.glob(text, recursive=True))]
            if not hits:
                raise NoResults(f"no file matches {text!r}")
        else:
            hits = [Path(text)]
        for p in hits:
            if p.is_dir():
                found.extend(sorted(p.rglob(STORE_NAME)))
            elif p.is_file():
                found.append(p)
            else:
                raise NoResults(f"{p} does not exist")
    unique: list[Path] = []
    seen: set[Path] = set()
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    if not unique:
        raise NoResults(f"no {STORE_NAME} under {', '.join(map(str, paths))}")
    return unique


def read_rows(path: Path) -> list[dict]:
    """Complete JSON lines only: a line cut off by a kill (no newline) or unparsable is skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n") or not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "cell_id" in row:
                rows.append(row)
    return rows


def _flatten(prefix: str, d: dict, out: dict) -> None:
    for k, v in d.items():
        key = f"{prefix}.{k}"
        if isinstance(v, dict) and v:
            _flatten(key, v, out)
        else:
            out[key] = v


def _shape_label(shape: dict) -> str:
    if not isinstance(shape, dict) or not shape:
        return ""
    try:
        return (
            f"{shape['heads_q']}:{shape['heads_kv']}:{shape['heads_kv']} d{shape['head_dim']} "
            f"{shape['dtype']} b{shape['batch']}"
        )
    except KeyError:
        return json.dumps(shape, sort_keys=True)


def _world(config: dict) -> int:
    """Ranks of a CP cell; an emulated run (every rank's compute on one device) counts its W."""
    world = config.get("world") or 1
    emulate = (config.get("cp") or {}).get("emulate") or 0
    return int(emulate) if world == 1 and emulate else int(world)


def flat_row(row: dict, source: str, order: int) -> dict:
    config = row.get("config") or {}
    env = row.get("env") or {}
    metrics = row.get("metrics") or {}
    out: dict = {
        "cell_id": row.get("cell_id", ""),
        "status": row.get("status", ""),
        "reason": row.get("reason", ""),
        "sweep": row.get("sweep", ""),
        "started_at": row.get("started_at", ""),
        "finished_at": row.get("finished_at", ""),
        "command": row.get("command") or config.get("command") or "",
        "source": source,
        "order": order,
        "config": config,
        "env": env,
        "metrics": metrics,
    }
    for name, d in (("config", config), ("env", env), ("metrics", metrics)):
        _flatten(name, d, out)
    cp = config.get("cp") or {}
    seqlen = pd.to_numeric(config.get("seqlen"), errors="coerce")
    out.update(
        kernel=(config.get("kernel") or {}).get("name", ""),
        mask=(config.get("mask") or {}).get("name", ""),
        seqlen=None if pd.isna(seqlen) else int(seqlen),
        mode=(config.get("bench") or {}).get("mode", ""),
        cp=cp.get("name", "none") or "none",
        shard=cp.get("shard", ""),
        world=_world(config),
        device=env.get("device", "") or "unknown device",
        shape=_shape_label(config.get("shape") or {}),
        tflops=metrics.get("tflops"),
        mark=MARKS.get(row.get("status", ""), ""),
    )
    out["setup"] = f"{out['device']}, {out['shape']}" if out["shape"] else out["device"]
    return out


def load(paths: Iterable[str | Path], dedup: bool = True) -> pd.DataFrame:
    """Rows of every store under `paths`; with dedup, the newest row per cell_id (and device).

    Newest = latest finished_at; ties (and rows without a time) are broken by file order:
    later file given, later line wins, which is also what an append-only store means.
    """
    stores = find_stores(paths)
    flat = []
    for path in stores:
        for row in read_rows(path):
            flat.append(flat_row(row, str(path), len(flat)))
    if not flat:
        raise NoResults(f"no result rows in {', '.join(map(str, stores))}")
    df = pd.DataFrame(flat)
    df["finished"] = pd.to_datetime(
        df["finished_at"].replace("", None), utc=True, errors="coerce", format="ISO8601"
    )
    if dedup:
        df = dedup_cells(df)
    return df.reset_index(drop=True)


def dedup_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Newest row per cell id and device.

    The cell id hashes what is measured, not where: the same sweep on an H100 and an H200 gives
    the same ids, and those are two measurements, not an old and a new one.
    """
    ordered = df.sort_values(["finished", "order"], na_position="first", kind="stable")
    return ordered.drop_duplicates(["cell_id", "device"], keep="last").sort_values("order", kind="stable")


def measurable(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that name a cell (an invalid config has no kernel/seqlen to put in a table)."""
    return df[(df["cell_id"] != "invalid-config") & df["seqlen"].notna() & (df["kernel"] != "")]
