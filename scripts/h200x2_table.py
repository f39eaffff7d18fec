"""docs/results/h200x2/README.md's table from issue 16's stores:

    python scripts/h200x2_table.py DIR [--out TABLE.md] [--readme README.md]

DIR holds results.jsonl (CP cells and their cp=none baselines) and, if run, emulated.jsonl
(cp.emulate) and rank_calls.jsonl (scripts/cp_rank_calls.py). Per tokens per GPU, one row per
strategy x mask x mode x kernel: TFLOPs/s per GPU, efficiency vs the single-GPU kernel at the
same total length, per-rank compute, exposed communication against the collectives' isolated
time, layout copies, bytes per rank, bus bandwidth per collective kind and the emulated
compute efficiency of the same cell. --readme replaces the text between the README's
`<!-- h200x2 table -->` and `<!-- /h200x2 table -->` lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from lcab.report.efficiency import frame
from lcab.report.load import load
from lcab.report.paper_cp import CELL, _num, emulated_cells, real_cells
from lcab.report.tables import seqlen_text

BEGIN, END = "<!-- h200x2 table -->", "<!-- /h200x2 table -->"
MODES = {"fwd": 0, "bwd": 1, "fwd_bwd": 2}


def _f(v: object, digits: int = 1) -> str:
    x = _num(v)
    return "" if x is None else f"{x:.{digits}f}"


def _g(v: object) -> str:
    """3 significant digits (TFLOPs/s on a GPU, tiny numbers on a CPU)."""
    x = _num(v)
    return "" if x is None else f"{x:.3g}"


def _ranks(v: object) -> str:
    return "/".join(_f(x) for x in v) if isinstance(v, (list, tuple)) else ""


def _mib(v: object) -> str:
    x = _num(v)
    return "" if x is None else f"{x / 2**20:.3g}"


def _emulated(df: pd.DataFrame, extra: pd.DataFrame | None) -> dict[tuple, float | None]:
    """Compute efficiency of the emulation of each real cell (same CELL key except world = emulate)."""
    rows = emulated_cells(pd.concat([df, extra]) if extra is not None else df)
    return {
        tuple(r[c] for c in CELL): _num((r["metrics"] or {}).get("compute_efficiency"))
        for r in rows.to_dict("records")
        if r["status"] == "ok"
    }


def table(results: list[str], emulated: list[str]) -> str:
    df = load(results)
    eff = frame(df)
    if eff.empty:
        return "(no CP cells in the stores)\n"
    cells = real_cells(df).to_dict("records")
    emu = _emulated(df, load(emulated) if emulated else None)
    keyed = {
        (r["cp"], r["shard"], r["kernel"], r["mask"], r["mode"], int(r["seqlen"]), int(r["world"])): r
        for r in cells
    }
    out = []
    eff = eff.assign(_m=eff["mode"].map(MODES).fillna(9))
    for tok, g in eff.sort_values(["tokens/GPU", "kernel", "strategy", "shard", "mask", "_m"]).groupby(
        "tokens/GPU", sort=True
    ):
        worlds = sorted(set(g["world"]))
        out.append(f"\n### {seqlen_text(int(tok))} tokens per GPU (world {', '.join(map(str, worlds))})\n")
        out.append(
            "| strategy | kernel | mask | mode | TFLOPs/s/GPU | 1-GPU TFLOPs/s | efficiency | compute ms per rank "
            "| exposed comm ms | isolated comm ms | layout ms | MiB sent/rank | busbw GB/s | emulated eff. | status |"
        )
        out.append("|---|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---|")
        skipped: dict[str, list[str]] = {}
        for r in g.to_dict("records"):
            if r["status"] in ("unsupported", "unavailable"):  # one line per reason, not a row per cell
                why = f"{r['strategy']}/{r['kernel']}: {r['status']}"
                skipped.setdefault(why, []).append(f"{r['mask']} {r['mode']}")
                continue
            row = keyed.get(
                (r["strategy"], r["shard"], r["kernel"], r["mask"], r["mode"], r["S"], r["world"])
            )
            e = emu.get(tuple(row[c] for c in CELL)) if row is not None else None
            bw = " ".join(f"{k}:{v:.3g}" for k, v in sorted((r["busbw GB/s"] or {}).items()))
            flag = f" ({r['flag']})" if r["flag"] else ""
            # torch_ring records compute 0 (not separable from torch's ring): no split to show.
            split = bool(_num(r["max compute ms"]))
            out.append(
                f"| {r['strategy']}/{r['shard']} | {r['kernel']} | {r['mask']} | {r['mode']} "
                f"| {_g(r['tflops/GPU'])} | {_g(r['baseline tflops'])} | {_f(r['efficiency'], 3)}{flag} "
                f"| {_ranks(r['rank compute ms']) if split else 'n/a'} "
                f"| {_f(r['max exposed comm ms'], 2) if split else 'n/a'} "
                f"| {_f(r['isolated comm ms'], 2)} | {_f(r['max layout ms'], 2)} | {_mib(r['max bytes sent/rank'])} "
                f"| {bw} | {_f(e, 3)} | {r['status']} |"
            )
        if skipped:
            out.append(
                "\nNot run (rows recorded with the reason): "
                + "; ".join(f"{k} ({len(v)} cells)" for k, v in sorted(skipped.items()))
                + "."
            )
    return "\n".join(out).lstrip("\n") + "\n"


def calls_table(path: Path) -> str:
    """Per rank and variant: step times and kernel calls (scripts/cp_rank_calls.py)."""
    if not path.exists():
        return ""
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip().startswith("{")]
    out = [
        "\n### Per-rank kernel calls (one GPU, scripts/cp_rank_calls.py)\n",
        "| cell | rank | variant | fwd ms | bwd ms | fwd calls (q x k) | bwd calls (q x k) |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for x in lines:
        shapes = {
            ph: " ".join(f"{c['q']}x{c['k']}:{c['ms']:.2f}" for c in x["calls"] if c["phase"] == ph)
            for ph in ("fwd", "bwd")
        }
        cell = f"{x['cp']}/{x['shard']} {x['kernel']} {x['mask']} S={x['seqlen']} w{x['world']}"
        out.append(
            f"| {cell} | {x['rank']} | {x['variant']} | {x['rank_fwd_ms']:.2f} | {x['rank_bwd_ms']:.2f} "
            f"| {shapes['fwd']} | {shapes['bwd']} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--readme", type=Path, default=None)
    ap.add_argument("--also", type=Path, action="append", default=[], help="another store, its own table")
    a = ap.parse_args(argv)
    results = [str(a.dir / "results.jsonl")]
    emulated = [str(p) for p in [a.dir / "emulated.jsonl"] if p.exists()]
    text = table(results, emulated) + calls_table(a.dir / "rank_calls.jsonl")
    for extra in a.also:  # another store of CP cells with their baselines (e.g. flash4's)
        text += f"\n### Also: {extra}\n" + ("\n" + table([str(extra)], [])).replace("\n### ", "\n#### ")
    if a.out:
        a.out.write_text(text, encoding="utf-8")
    if a.readme:
        doc = a.readme.read_text(encoding="utf-8")
        i, j = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        a.readme.write_text(doc[:i] + "\n" + text + doc[j:], encoding="utf-8")
    if not a.out and not a.readme:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
