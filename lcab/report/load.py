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

from lcab.results.store import read_rows

STORE_GLOB = "*.jsonl"  # a folder is searched for every store in it (results.jsonl, verify.jsonl, ...)

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
    """Every *.jsonl file under directories, glob patterns, or direct file paths (in order)."""
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
                found.extend(sorted(h for h in p.rglob(STORE_GLOB) if h.is_file()))
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
        raise NoResults(f"no results store ({STORE_GLOB}) under {', '.join(map(str, paths))}")
    return unique


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


def _dict(d: dict, key: str) -> dict:
    """A sub-config, or {} where a row lacks it or holds something else (a hand-edited or foreign row)."""
    v = d.get(key)
    return v if isinstance(v, dict) else {}


def _text(v: object, default: str = "") -> str:
    return v if isinstance(v, str) and v else default


def _int(v: object) -> int | None:
    """An integer field, or None for what is not one (e.g. an invalid config's typed `seqlen=0k`)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    n = pd.to_numeric(v, errors="coerce")
    return None if pd.isna(n) or n != int(n) else int(n)


def _world(config: dict) -> int:
    """Ranks of a CP cell; an emulated run (every rank's compute on one device) counts its W."""
    world = _int(config.get("world")) or 1
    emulate = _int(_dict(config, "cp").get("emulate")) or 0
    return emulate if world == 1 and emulate > 0 else max(world, 1)


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def flat_row(row: dict, source: str, order: int) -> dict:
    """One row flattened; fields a row lacks (an invalid config has no env or metrics) get neutral
    values, so one odd row never stops the report of the others."""
    config, env, metrics = _dict(row, "config"), _dict(row, "env"), _dict(row, "metrics")
    out: dict = {
        "cell_id": _text(row.get("cell_id")),
        "status": _text(row.get("status")),
        "reason": str(row.get("reason") or ""),
        "sweep": _text(row.get("sweep")),
        "started_at": _text(row.get("started_at")),
        "finished_at": _text(row.get("finished_at")),
        "command": _text(row.get("command")) or _text(config.get("command")),
        "overrides": row.get("overrides"),  # the job's Hydra overrides (lcab/report/commands.py)
        "sweep_overrides": row.get("sweep_overrides"),
        "source": source,
        "order": order,
        "config": config,
        "env": env,
        "metrics": metrics,
    }
    for name, d in (("config", config), ("env", env), ("metrics", metrics)):
        _flatten(name, d, out)
    cp = _dict(config, "cp")
    out.update(
        kernel=_text(_dict(config, "kernel").get("name")),
        mask=_text(_dict(config, "mask").get("name")),
        seqlen=_int(config.get("seqlen")),
        mode=_text(_dict(config, "bench").get("mode")),
        cp=_text(cp.get("name"), "none"),
        shard=_text(cp.get("shard")),
        world=_world(config),
        device=_text(env.get("device"), "unknown device"),
        device_type=_text(env.get("device_type")) or _text(_dict(config, "bench").get("device")),
        shape=_shape_label(_dict(config, "shape")),
        tflops=_number(metrics.get("tflops")),
        mark=MARKS.get(out["status"], ""),
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
    # Every invalid config shares one cell id; distinct mistakes (reasons) are distinct rows.
    invalid = ordered["cell_id"] == "invalid-config"
    key = ordered["cell_id"].where(~invalid, "invalid-config: " + ordered["reason"].astype(str))
    kept = ~pd.DataFrame({"key": key, "device": ordered["device"]}).duplicated(keep="last")
    return ordered[kept].sort_values("order", kind="stable")


def measurable(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that name a cell (an invalid config has no kernel/seqlen to put in a table)."""
    return df[(df["cell_id"] != "invalid-config") & df["seqlen"].notna() & (df["kernel"] != "")]
