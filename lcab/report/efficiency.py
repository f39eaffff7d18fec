"""CP efficiency against the single-GPU kernel on the same cell (issue 16):
efficiency = TFLOPs/s per GPU of a CP cell / TFLOPs/s of its baseline, the cp=none cell of the
same kernel, mask, mode, shape and TOTAL length on one GPU (the h200x2 preset puts both in one
store). Targets: full and causal >= 0.92 for every strategy; the best strategy on
causal_document >= 0.80. (paper_cp's vs_single compares at S = tokens per GPU instead.)"""

from __future__ import annotations

import pandas as pd

from lcab.report.paper_cp import _max, _num, _ok_tflops, _records, real_cells, single_cells
from lcab.report.tables import Table, seqlen_text
from lcab.report.targets import flag_targets

TARGET_EVERY = {"full": 0.92, "causal": 0.92}
TARGET_BEST = {"causal_document": 0.80}
BASE_KEY = ("kernel", "mask", "seqlen", "mode", "shape")


def _region_max(m: dict, name: str) -> float | None:
    per_rank = m.get("rank_region_ms") or []
    return _max([(r or {}).get(name) for r in per_rank])


def _busbw_by_op(m: dict) -> dict[str, float]:
    """Bus bandwidth per collective operation (the best kind of each op), GB/s."""
    out: dict[str, float] = {}
    for e in (m.get("coll_busbw") or {}).values():
        if isinstance(e, dict) and _num(e.get("busbw_gbps")) is not None:
            op = str(e.get("ops"))
            out[op] = max(out.get(op, 0.0), float(e["busbw_gbps"]))
    return out


def _isolated_ms(m: dict) -> float | None:
    """The cell's collectives replayed alone: sum over kinds of (calls per step x ms per call),
    the slowest rank's count (what exposed communication compares with)."""
    bw = m.get("coll_busbw") or {}
    calls = m.get("rank_calls") or []
    if not isinstance(bw, dict) or not bw or not calls:
        return None
    per_rank = []
    for c in calls:
        per_rank.append(sum(float(n) * float(bw[k]["ms"]) for k, n in (c or {}).items() if k in bw))
    return max(per_rank)


def baselines(df: pd.DataFrame) -> dict[tuple, dict]:
    """The cp=none row of each BASE_KEY (a CP cell's baseline: baseline_of)."""
    return {tuple(r[k] for k in BASE_KEY): r for r in _records(single_cells(df))}


def baseline_of(r: dict, found: dict[tuple, dict]) -> dict | None:
    return found.get(tuple(r[k] for k in BASE_KEY))


def frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per real CP cell (newest), with its baseline and efficiency."""
    found = baselines(df)
    rows = []
    for r in _records(real_cells(df)):
        m = r["metrics"] or {}
        base = baseline_of(r, found)
        got, ref = _ok_tflops(r), _ok_tflops(base)
        exposed, iso = _max(m.get("rank_exposed_comm_ms")), _isolated_ms(m)
        rows.append(
            {
                "strategy": r["cp"],
                "shard": r["shard"],
                "kernel": r["kernel"],
                "mask": r["mask"],
                "mode": r["mode"],
                "world": int(r["world"]),
                "S": int(r["seqlen"]),
                "tokens/GPU": int(r["seqlen"]) // int(r["world"]),
                "status": r["status"],
                "tflops/GPU": got,
                "baseline tflops": ref,
                "baseline status": base["status"] if base is not None else "not run",
                "efficiency": got / ref if got is not None and ref else None,
                "time ms": _num(m.get("time_ms_p50")),
                "rank compute ms": m.get("rank_compute_ms"),
                "max compute ms": _max(m.get("rank_compute_ms")),
                "max exposed comm ms": exposed,
                "isolated comm ms": iso,
                "exposed/isolated": exposed / iso if exposed is not None and iso else None,
                "max layout ms": _region_max(m, "layout"),
                "max comm region ms": _region_max(m, "comm"),
                "max bytes sent/rank": _max(m.get("rank_bytes_sent")),
                "busbw GB/s": _busbw_by_op(m),
                "area_imbalance": _num(m.get("area_imbalance")),
                "flag": "",
                "best": "",
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    return flag_targets(
        out, "efficiency", ["kernel", "mask", "world", "S", "mode"], TARGET_EVERY, TARGET_BEST
    )


def tables(df: pd.DataFrame) -> list[Table]:
    """Efficiency per (strategy/shard, kernel, mask, world, tokens per GPU) x mode."""
    f = frame(df)
    if f.empty or f["efficiency"].notna().sum() == 0:
        return []
    f = f.assign(strat=f["strategy"] + "/" + f["shard"].astype(str), tok=f["tokens/GPU"].map(seqlen_text))
    wide = f.pivot_table(
        index=["strat", "kernel", "mask", "world", "tok"], columns="mode", values="efficiency", aggfunc="last"
    )
    return [
        Table(
            kind="cp",
            name="cp_efficiency",
            title="CP efficiency: TFLOPs/s per GPU / the single-GPU kernel's TFLOPs/s at the same total length",
            frame=wide,
            index_name="strategy / kernel / mask / world / tokens per GPU",
            notes=[
                "Baseline: the cp=none row of the same kernel, mask, mode, shape and total length "
                f"(world 1). Targets: full and causal >= {TARGET_EVERY['full']:g} every strategy; "
                f"best on causal_document >= {TARGET_BEST['causal_document']:g}."
            ],
            digits={c: 3 for c in wide.columns},
        )
    ]
