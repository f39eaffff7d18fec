"""Tables from the frame of `load`: kernel x seqlen and CP strategy x world, plus A/B comparisons.

A table cell holds the row's exact TFLOPs/s (a float) for an ok row, or the status mark
(E, X, -, ERR, INV, INT) for any other row; never a number from a failed cell. CSV keeps
full precision; markdown shows one decimal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lcab.report.load import MARKS

# Params that differ between cells which would otherwise share a table cell are shown in the label.
_KERNEL_BASE = ["setup", "mask", "mode", "seqlen", "cp", "shard", "world"]
_MASK_BASE = ["setup", "kernel", "mode", "seqlen", "cp", "shard", "world"]
_CP_BASE = ["setup", "mask", "mode", "seqlen", "cp", "shard", "world"]


def seqlen_text(n: int) -> str:
    n = int(n)
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}m"
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def slug(*parts: object) -> str:
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_").lower() or "table"


def _label_params(df: pd.DataFrame, name_col: str, prefix: str, base: list[str]) -> pd.Series:
    """name plus `(k=v, ...)` for config params under prefix that tell colliding cells apart."""
    params = [c for c in df.columns if c.startswith(prefix) and not c.endswith(".name")]
    labels = df[name_col].astype(str).copy()
    for _name, grp in df.groupby(name_col, sort=False):
        shown = []
        for p in params:
            vals = grp[p].map(repr)
            if vals.nunique() < 2:
                continue
            per_cell = vals.groupby([grp[b].map(repr) for b in base]).nunique()
            if (per_cell > 1).any():
                shown.append(p)
        if shown:
            extra = grp[shown].apply(
                lambda r, shown=shown: ", ".join(f"{p[len(prefix) :]}={r[p]}" for p in shown), axis=1
            )
            labels.loc[grp.index] = grp[name_col].astype(str) + " (" + extra + ")"
    return labels


def add_labels(df: pd.DataFrame) -> pd.DataFrame:
    """kernel_label, mask_label, strategy (cp name/shard [kernel] [params]) columns."""
    df = df.copy()
    if df.empty:
        for c in ("kernel_label", "mask_label", "strategy"):
            df[c] = pd.Series(dtype=object)
        return df
    df["kernel_label"] = _label_params(df, "kernel", "config.kernel.", _KERNEL_BASE)
    df["mask_label"] = _label_params(df, "mask", "config.mask.", _MASK_BASE)
    cp = df["cp"] != "none"
    df["strategy"] = ""
    if cp.any():
        sub = df[cp].copy()
        sub["_strat"] = sub["cp"] + "/" + sub["shard"].astype(str)
        # An emulated cell is every rank's compute on one device, without communication:
        # it must never read as a measured multi-GPU number.
        if "config.cp.emulate" in sub.columns:
            emulated = pd.to_numeric(sub["config.cp.emulate"], errors="coerce").fillna(0) > 0
            sub.loc[emulated, "_strat"] = sub.loc[emulated, "_strat"] + " (emulated, compute only)"
        kernels_per_cell = sub.groupby([*_CP_BASE])["kernel_label"].nunique()
        if (kernels_per_cell > 1).any():
            sub["_strat"] = sub["_strat"] + " " + sub["kernel_label"]
        skip = {"config.cp.shard", "config.cp.emulate"}
        sub = sub.drop(columns=[c for c in sub.columns if c in skip])
        df.loc[cp, "strategy"] = _label_params(sub, "_strat", "config.cp.", _CP_BASE)
    return df


def collapse(df: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, int]:
    """One row per table cell: the newest. Returns the rows and how many older variants were hidden."""
    ordered = df.sort_values(["finished", "order"], na_position="first", kind="stable")
    kept = ordered.drop_duplicates(keys, keep="last")
    return kept.sort_values("order", kind="stable"), len(df) - len(kept)


def cell_value(status: str, tflops: object) -> object:
    if status == "ok":
        if tflops is None or (isinstance(tflops, float) and math.isnan(tflops)):
            return "?"
        return float(tflops)
    return MARKS.get(status, status.upper() or "?")


@dataclass
class Table:
    kind: str  # kernel | cp | compare
    name: str  # file stem
    title: str
    frame: pd.DataFrame  # index: row labels; columns: seqlen / world / compare fields
    index_name: str
    column_text: dict = field(default_factory=dict)  # column -> header text in markdown
    notes: list[str] = field(default_factory=list)
    group: dict = field(default_factory=dict)
    digits: dict = field(default_factory=dict)  # column -> decimals in markdown (default 1)

    def cell_text(self, column: object, v: object) -> str:
        return fmt(v, self.digits.get(column, 1))

    def markdown(self) -> str:
        cols = list(self.frame.columns)
        head = [self.index_name, *[self.column_text.get(c, str(c)) for c in cols]]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(cols)) + "|"]
        for idx, row in self.frame.iterrows():
            label = " / ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
            lines.append(
                "| "
                + " | ".join([label.replace("|", "\\|"), *(self.cell_text(c, row[c]) for c in cols)])
                + " |"
            )
        return "\n".join(lines)

    def write(self, out: Path) -> tuple[Path, Path]:
        out.mkdir(parents=True, exist_ok=True)
        csv = out / f"{self.name}.csv"
        md = out / f"{self.name}.md"
        frame = self.frame.copy()
        frame.index.name = self.index_name
        # float repr round-trips: the CSV holds the rows' exact numbers.
        frame.to_csv(csv, float_format=None)
        notes = "".join(f"\n\n{n}" for n in self.notes)
        md.write_text(f"### {self.title}\n\n{self.markdown()}{notes}\n", encoding="utf-8")
        return csv, md


def fmt(v: object, digits: int = 1) -> str:
    """One decimal; a value that would print as 0.0 keeps two significant digits instead."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        text = f"{v:.{digits}f}"
        return f"{v:.2g}" if v != 0 and float(text) == 0 else text
    return str(v)


def _order(values: pd.Series) -> list:
    return list(dict.fromkeys(values))


def kernel_tables(df: pd.DataFrame) -> tuple[list[Table], int]:
    """kernel x seqlen TFLOPs/s, one table per (setup, mask, mode)."""
    rows = df[df["cp"] == "none"]
    if rows.empty:
        return [], 0
    rows, hidden = collapse(rows, ["setup", "mask_label", "mode", "kernel_label", "seqlen"])
    multi = rows["setup"].nunique() > 1
    tables = []
    for (setup, mask, mode), grp in rows.groupby(["setup", "mask_label", "mode"], sort=False):
        seqlens = sorted(grp["seqlen"].astype(int).unique())
        frame = pd.DataFrame(index=_order(grp["kernel_label"]), columns=seqlens, dtype=object)
        for _, r in grp.iterrows():
            frame.loc[r["kernel_label"], int(r["seqlen"])] = cell_value(r["status"], r["tflops"])
        name = slug("kernels", mode, mask, setup if multi else "")
        title = f"TFLOPs/s, {mask}, {mode} — {setup}"
        tables.append(
            Table(
                "kernel",
                name,
                title,
                frame,
                "kernel",
                {s: seqlen_text(s) for s in seqlens},
                group={"setup": setup, "mask": mask, "mode": mode},
            )
        )
    return tables, hidden


def rank_word(rows: pd.DataFrame) -> str:
    """What one rank of these rows is: "GPU" when every row ran on CUDA, else "rank" (a CPU
    gloo process is no GPU)."""
    kinds = set(rows["device_type"]) if "device_type" in rows.columns else set()
    return "GPU" if kinds == {"cuda"} else "rank"


def cp_rows(df: pd.DataFrame) -> pd.DataFrame:
    """CP rows (cp != none), the newest per table cell, with their tokens per rank."""
    rows = df[df["cp"] != "none"].copy()
    if rows.empty:
        return rows
    rows["tokens_per_gpu"] = (rows["seqlen"] // rows["world"].clip(lower=1)).astype(int)
    rows, _ = collapse(rows, ["setup", "mask_label", "mode", "seqlen", "strategy", "world"])
    return rows


@dataclass
class Series:
    """CP rows that belong on one scaling plot/table, told apart by what the sweep held fixed:
    weak = tokens per rank fixed while the world grows, strong = total tokens fixed while it
    grows, one world = a sequence run at one world size only."""

    kind: str  # weak | strong | one world
    tokens: int  # per rank (weak, one world) or in total (strong)
    rows: pd.DataFrame

    def describe(self, word: str) -> str:
        if self.kind == "weak":
            return f"weak scaling, {seqlen_text(self.tokens)} tokens per {word}"
        if self.kind == "strong":
            return f"strong scaling, {seqlen_text(self.tokens)} tokens in total"
        world = int(self.rows["world"].iloc[0])
        return f"{world} {word}s, {seqlen_text(self.tokens)} tokens per {word}"

    def slug_parts(self) -> tuple:
        """Weak and one-world names as before strong scaling existed: cp_..._<tokens per rank>."""
        tok = seqlen_text(self.tokens)
        return ("strong", tok) if self.kind == "strong" else (tok,)


def scaling_series(rows: pd.DataFrame) -> list[Series]:
    """The scaling series among CP rows of one setup and mode (from `cp_rows`). A row can be in
    a weak and a strong series at once (it is drawn in both); rows in neither are grouped by
    tokens per rank."""
    out: list[Series] = []
    used = pd.Series(False, index=rows.index)
    for kind, key in (("weak", "tokens_per_gpu"), ("strong", "seqlen")):
        for tokens, grp in rows.groupby(key, sort=False):
            if grp["world"].nunique() > 1:
                out.append(Series(kind, int(tokens), grp))
                used[grp.index] = True
    for tokens, grp in rows[~used].groupby("tokens_per_gpu", sort=False):
        out.append(Series("one world", int(tokens), grp))
    return out


def cp_tables(df: pd.DataFrame) -> tuple[list[Table], int]:
    """strategy x world TFLOPs/s per rank, one table per (setup, mask, mode, scaling series)."""
    rows = df[df["cp"] != "none"]
    if rows.empty:
        return [], 0
    rows = cp_rows(df)
    hidden = int((df["cp"] != "none").sum()) - len(rows)
    multi = rows["setup"].nunique() > 1
    tables = []
    for (setup, mode), by_mode in rows.groupby(["setup", "mode"], sort=False):
        word = rank_word(by_mode)
        for series in scaling_series(by_mode):
            for mask, grp in series.rows.groupby("mask_label", sort=False):
                worlds = sorted(grp["world"].astype(int).unique())
                frame = pd.DataFrame(index=_order(grp["strategy"]), columns=worlds, dtype=object)
                for _, r in grp.iterrows():
                    frame.loc[r["strategy"], int(r["world"])] = cell_value(r["status"], r["tflops"])
                name = slug("cp", mode, mask, *series.slug_parts(), setup if multi else "")
                title = f"CP TFLOPs/s per {word}, {mask}, {mode}, {series.describe(word)} — {setup}"
                tables.append(
                    Table(
                        "cp",
                        name,
                        title,
                        frame,
                        "strategy",
                        {w: f"{w} {word}s" for w in worlds},
                        group={
                            "setup": setup,
                            "mask": mask,
                            "mode": mode,
                            "scaling": series.kind,
                            "tokens": series.tokens,
                        },
                    )
                )
    return tables, hidden


def compare_frame(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Long form: one line per (shape, mask, mode, kernel, seqlen) in either store, with A, B and B/A."""
    both = pd.concat([a.assign(side="A"), b.assign(side="B")], ignore_index=True)
    both = both[both["cp"] == "none"]
    if both.empty:
        return pd.DataFrame(columns=["shape", "mask", "mode", "kernel", "seqlen", "A", "B", "B/A"])
    both["setup_side"] = both["side"]
    # Labels are computed with the side as part of the cell, so A and B never "collide".
    both["setup"] = both["side"] + both["shape"]
    both = add_labels(both)
    keys = ["shape", "mask_label", "mode", "kernel_label", "seqlen"]
    both, _ = collapse(both, [*keys, "side"])
    out = []
    for key, grp in both.groupby(keys, sort=False):
        line = dict(zip(["shape", "mask", "mode", "kernel", "seqlen"], key, strict=True))
        for side in ("A", "B"):
            hit = grp[grp["side"] == side]
            line[side] = cell_value(hit["status"].iloc[0], hit["tflops"].iloc[0]) if len(hit) else None
        va, vb = line["A"], line["B"]
        line["B/A"] = vb / va if isinstance(va, float) and isinstance(vb, float) and va > 0 else None
        out.append(line)
    return pd.DataFrame(out)


def compare_tables(long: pd.DataFrame, name_a: str, name_b: str) -> list[Table]:
    tables = []
    multi = long["shape"].nunique() > 1
    for (shape, mask, mode), grp in long.groupby(["shape", "mask", "mode"], sort=False):
        grp = grp.sort_values(["seqlen"], kind="stable")
        grp = grp.set_index(["kernel", "seqlen"])[["A", "B", "B/A"]]
        order = _order(grp.index.get_level_values(0))
        grp = grp.loc[order]
        frame = grp.copy()
        frame.index = [(k, seqlen_text(s)) for k, s in grp.index]
        title = f"{mask}, {mode}: A = {name_a}, B = {name_b}" + (f" ({shape})" if multi else "")
        tables.append(
            Table(
                "compare",
                slug("compare", mode, mask, shape if multi else ""),
                title,
                frame,
                "kernel / seqlen",
                {"A": "A TFLOPs/s", "B": "B TFLOPs/s", "B/A": "B/A"},
                group={"shape": shape, "mask": mask, "mode": mode},
                digits={"B/A": 2},
            )
        )
    return tables
