"""The kernel study against the paper: `python -m lcab.report.paper STORE... --out DIR`.

Writes, from the newest row per cell:
  anchors.md/.csv       every reference number of ANCHORS.md section 5 next to lcab's cell
                        (same kernel call, mask, S, mode) and the ratio lcab / reference
  mask_vs_full.md/.csv  each kernel's TFLOPs/s on a mask it expresses natively as a fraction of
                        its own full-mask TFLOPs/s at the same S and mode (< 0.5 is flagged),
                        beside the mask's 128x128 tile occupancy (the most a tile-skipping
                        kernel can reach: lcab/masks/tiles.py) and the fraction of that bound
  which_kernel.md/.csv  the fastest kernel per mask, seqlen band and mode, with its TFLOPs/s
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from functools import cache
from importlib import resources
from pathlib import Path

import pandas as pd

from lcab.config import group_schemas, mask_config
from lcab.masks import build as build_mask
from lcab.masks.tiles import tile_occupancy
from lcab.report.load import load, measurable
from lcab.report.tables import fmt, seqlen_text

# The paper's kernel names -> lcab kernels that make the same library call (or the nearest).
PAPER_KERNELS = {
    "fa2": ("flash2", "sdpa_flash"),  # sdpa_flash is FlashAttention-2 compiled into torch
    "fa3": ("flash3",),
    "cudnn": ("cudnn", "sdpa_cudnn"),  # paper: cuDNN through TransformerEngine
    "flex": ("flex",),
    "sdpa": ("sdpa",),
}
BANDS = (("up to 4K", 0, 4096), ("5K-16K", 4097, 16384), ("over 16K", 16385, 1 << 40))
FLAG_BELOW = 0.5
TILE = 128  # the query x key tile of cuDNN's and FlashAttention's Hopper kernels at d128


@cache
def _occupancy(mask_items: tuple, seqlen: int) -> float:
    return tile_occupancy(build_mask(mask_config(dict(mask_items)), seqlen), TILE)


def tile_bound(r: dict) -> float | None:
    """The row's mask rebuilt from its recorded config: 128x128 tile occupancy."""
    keys = list(dict.fromkeys(f.name for node in group_schemas("mask") for f in fields(node)))
    items = {k: r.get(f"config.mask.{k}") for k in keys}
    if items["name"] is None:
        return None
    items = {k: v for k, v in items.items() if v is not None and not (isinstance(v, float) and pd.isna(v))}
    return _occupancy(tuple(sorted(items.items())), int(r["seqlen"]))


def anchors() -> pd.DataFrame:
    with resources.files("lcab.report").joinpath("data/anchors_h100.csv").open() as f:
        return pd.read_csv(f, comment="#").fillna({"note": ""})


def _cells(df: pd.DataFrame) -> pd.DataFrame:
    """Single-device timing cells (no verify passes), the newest row per (kernel, mask, seqlen, mode)."""
    df = measurable(df)
    df = df[(df["cp"] == "none") & (df["world"] == 1)]
    if "config.bench.verify" in df:
        df = df[df["config.bench.verify"] != True]  # noqa: E712 (pandas elementwise)
    return df.drop_duplicates(["kernel", "mask", "seqlen", "mode"], keep="last")


def _records(df: pd.DataFrame) -> list[dict]:
    return df.to_dict("records")  # dicts: flattened keys like "metrics.mask_form" stay readable


def _lookup(cells: pd.DataFrame) -> dict[tuple, dict]:
    return {(r["kernel"], r["mask"], int(r["seqlen"]), r["mode"]): r for r in _records(cells)}


def anchor_table(cells: pd.DataFrame) -> pd.DataFrame:
    found = _lookup(cells)
    rows = []
    for a in anchors().itertuples():
        targets = PAPER_KERNELS.get(a.kernel, (a.kernel,)) if a.source == "paper" else (a.kernel,)
        for k in targets:
            r = found.get((k, a.mask, int(a.seqlen), a.mode))
            status = r["status"] if r is not None else "not run"
            got = r["tflops"] if r is not None and status == "ok" else None
            rows.append(
                {
                    "source": a.source,
                    "reference kernel": a.kernel,
                    "lcab kernel": k,
                    "mask": a.mask,
                    "S": seqlen_text(int(a.seqlen)),
                    "mode": a.mode,
                    "reference": float(a.tflops),
                    "lcab": got,
                    "ratio": got / a.tflops if got is not None else None,
                    "status": status,
                    "n_docs": r.get("metrics.n_docs") if r is not None else None,
                    "note": a.note,
                }
            )
    return pd.DataFrame(rows)


def mask_vs_full(cells: pd.DataFrame) -> pd.DataFrame:
    ok = cells[cells["status"] == "ok"]
    full = {
        (r["kernel"], int(r["seqlen"]), r["mode"]): r["tflops"] for r in _records(ok[ok["mask"] == "full"])
    }
    rows = []
    for r in _records(ok[ok["mask"] != "full"]):
        base = full.get((r["kernel"], int(r["seqlen"]), r["mode"]))
        form = r.get("metrics.mask_form", "")
        if base is None or form == "dense":
            continue  # no full cell, or a dense mask (every masked block computed): not native
        frac = r["tflops"] / base
        bound = tile_bound(r)
        rows.append(
            {
                "kernel": r["kernel"],
                "mask": r["mask"],
                "S": int(r["seqlen"]),
                "mode": r["mode"],
                "form": form,
                "tflops": r["tflops"],
                "full": base,
                "fraction": frac,
                "tile bound": bound,
                "of bound": frac / bound if bound else None,
                "flag": "below 0.5" if frac < FLAG_BELOW else "",
            }
        )
    return pd.DataFrame(rows)


def which_kernel(cells: pd.DataFrame) -> pd.DataFrame:
    ok = cells[cells["status"] == "ok"].copy()
    rows = []
    for mask in dict.fromkeys(ok["mask"]):
        for band, lo, hi in BANDS:
            for mode in dict.fromkeys(ok["mode"]):
                sel = ok[(ok["mask"] == mask) & (ok["mode"] == mode) & ok["seqlen"].between(lo, hi)]
                if sel.empty:
                    continue
                # Mean over the band's lengths a kernel ran at; a kernel must cover them all.
                need = sel["seqlen"].nunique()
                per = sel.groupby("kernel").agg(tflops=("tflops", "mean"), n=("seqlen", "nunique"))
                per = per[per["n"] == need].sort_values("tflops", ascending=False)
                if per.empty:
                    continue
                best, second = per.index[0], (per.index[1] if len(per) > 1 else "")
                rows.append(
                    {
                        "mask": mask,
                        "band": band,
                        "mode": mode,
                        "kernel": best,
                        "tflops": per["tflops"].iloc[0],
                        "runner-up": second,
                        "runner-up tflops": per["tflops"].iloc[1] if second else None,
                    }
                )
    return pd.DataFrame(rows)


def _markdown(df: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        return fmt(v, 2 if isinstance(v, float) and abs(v) < 10 else 1)

    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "\n".join(
        "| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)
    )


def save(frames: dict[str, pd.DataFrame], out: Path) -> dict[str, pd.DataFrame]:
    """Each table as NAME.csv and NAME.md under out; prints where each went."""
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.md").write_text(_markdown(frame) + "\n", encoding="utf-8")
        print(f"{name}: {len(frame)} rows -> {out / name}.md")
    return frames


def write(paths: list[str], out: Path) -> dict[str, pd.DataFrame]:
    cells = _cells(load(paths))
    frames = {
        "anchors": anchor_table(cells),
        "mask_vs_full": mask_vs_full(cells),
        "which_kernel": which_kernel(cells),
    }
    return save(frames, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lcab.report.paper", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="result stores (files, dirs or globs)")
    ap.add_argument("--out", default="outputs/report/paper")
    a = ap.parse_args(argv)
    write(a.paths, Path(a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
