"""Figures (PNG + SVG, matplotlib Agg) from the labelled frame of `tables.add_labels`.

Each builder returns Figure records for what it drew and Skip records (with the reason) for
what the data cannot show, so the index can say why a figure is absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lcab.report.load import MARK_LEGEND, MARKS
from lcab.report.tables import Series, collapse, cp_rows, rank_word, scaling_series, seqlen_text, slug

STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "figure.titlesize": 14,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.axisbelow": True,
    "svg.fonttype": "none",
}
MARK_NOTE = "   ".join(f"{m} = {MARK_LEGEND[m].split(' (')[0]}" for m in ("E", "X", "-", "ERR", "INV"))


@dataclass
class Figure:
    kind: str
    name: str
    title: str
    png: Path
    svg: Path
    description: str


@dataclass
class Skip:
    kind: str
    reason: str


def palette(labels: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def _grid(n: int, ncols: int = 3, w: float = 5.6, h: float = 3.8):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(w * ncols, 8.5), h * nrows + 1.6), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, out: Path, name: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    fig.savefig(png, dpi=110, bbox_inches="tight")
    fig.savefig(svg, bbox_inches="tight")
    plt.close(fig)
    return png, svg


def _finish(fig, title: str, subtitle: str, legend: tuple | None = None, note: str = "") -> None:
    """Title with the device as subtitle, one legend for all panels under it, and a footnote."""
    fig.suptitle(f"{title}\n{subtitle}", fontsize=14)
    if legend:
        handles, labels = legend
        ncol = max(1, min(len(labels), 5, int(fig.get_figwidth() // 2.6)))
        leg = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)
        if note:
            leg.set_title(note, prop={"size": 9})
            leg.get_title().set_color("0.3")
    elif note:
        fig.supxlabel(note, fontsize=9, color="0.3")


def _value_of(r: pd.Series) -> float | None:
    if r["status"] != "ok":
        return None
    v = r["tflops"]
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _mark_of(r: pd.Series) -> str:
    return MARKS.get(r["status"], str(r["status"]).upper())


def _draw_marks(ax, marks: list[tuple[float, str, tuple]], ymax: float) -> None:
    box = {"boxstyle": "round,pad=0.2", "fc": "white", "lw": 0.8}
    for x, text, color in marks:
        ax.text(
            x,
            ymax * 0.02,
            text,
            ha="center",
            va="bottom",
            fontsize=10,
            fontweight="bold",
            color=color,
            rotation=90 if len(text) > 1 else 0,
            bbox={**box, "ec": color},
        )


def _kernel_rows(df: pd.DataFrame) -> pd.DataFrame:
    rows = df[df["cp"] == "none"]
    if rows.empty:
        return rows
    rows, _ = collapse(rows, ["setup", "mask_label", "mode", "kernel_label", "seqlen"])
    return rows


def bars(df: pd.DataFrame, out: Path) -> list[Figure | Skip]:
    """Grouped bars per mask (the paper's kernel figure): kernels side by side, x = seqlen."""
    rows = _kernel_rows(df)
    if rows.empty:
        return [Skip("bars", "no single-device rows (cp=none) to draw kernel bars from")]
    colors = palette(list(dict.fromkeys(rows["kernel_label"])))
    made: list[Figure | Skip] = []
    multi = rows["setup"].nunique() > 1
    for (setup, mode), grp in rows.groupby(["setup", "mode"], sort=False):
        masks = list(dict.fromkeys(grp["mask_label"]))
        kernels = list(dict.fromkeys(grp["kernel_label"]))
        with plt.rc_context(STYLE):
            fig, axes = _grid(len(masks))
            width = 0.8 / len(kernels)
            for ax, mask in zip(axes, masks, strict=True):
                sub = grp[grp["mask_label"] == mask]
                seqlens = sorted(sub["seqlen"].astype(int).unique())
                xi = {s: i for i, s in enumerate(seqlens)}
                vals = [v for v in (_value_of(r) for _, r in sub.iterrows()) if v is not None]
                ymax = max(vals) * 1.15 if vals else 1.0
                marks = []
                for k, kernel in enumerate(kernels):
                    ks = sub[sub["kernel_label"] == kernel]
                    off = (k - (len(kernels) - 1) / 2) * width
                    xs, hs = [], []
                    for _, r in ks.iterrows():
                        x = xi[int(r["seqlen"])] + off
                        v = _value_of(r)
                        if v is None:
                            marks.append((x, _mark_of(r), colors[kernel]))
                        else:
                            xs.append(x)
                            hs.append(v)
                    ax.bar(xs, hs, width=width * 0.95, color=colors[kernel], label=kernel)
                _draw_marks(ax, marks, ymax)
                ax.set_ylim(0, ymax)
                ax.set_xlim(-0.5, len(seqlens) - 0.5)
                ax.set_xticks(range(len(seqlens)), [seqlen_text(s) for s in seqlens])
                ax.set_title(mask)
                ax.set_xlabel("sequence length (tokens)")
                ax.set_ylabel("TFLOPs/s")
            handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in kernels]
            title = f"Attention kernel throughput ({mode})"
            _finish(fig, title, setup, (handles, kernels), "Marks at a bar's place: " + MARK_NOTE)
            name = slug("bars", mode, setup if multi else "")
            png, svg = _save(fig, out, name)
        made.append(
            Figure(
                "bars",
                name,
                f"{title} — {setup}",
                png,
                svg,
                "TFLOPs/s (p50 time) per kernel, grouped by sequence length, one panel per mask.",
            )
        )
    return made


def _common_seqlen(grp: pd.DataFrame, want: int | None) -> int | None:
    have = set(grp["seqlen"].astype(int))
    if want is not None:
        return want if want in have else None
    per_mask = [set(g["seqlen"].astype(int)) for _, g in grp.groupby("mask_label")]
    common = set.intersection(*per_mask) if per_mask else set()
    if common:
        return max(common)
    # No length shared by every mask: the one most masks have, the longest among those.
    counts = pd.Series([s for ss in per_mask for s in ss]).value_counts()
    best = counts[counts == counts.max()].index
    return int(max(best))


def heatmap(df: pd.DataFrame, out: Path, seqlen: int | None = None) -> list[Figure | Skip]:
    """kernel x mask TFLOPs/s at one sequence length (the longest every mask has, or --seqlen)."""
    rows = _kernel_rows(df)
    if rows.empty:
        return [Skip("heatmap", "no single-device rows (cp=none) for a kernel x mask heatmap")]
    made: list[Figure | Skip] = []
    multi = rows["setup"].nunique() > 1
    for (setup, mode), grp in rows.groupby(["setup", "mode"], sort=False):
        s = _common_seqlen(grp, seqlen)
        if s is None:
            made.append(Skip("heatmap", f"{setup}, {mode}: no rows at seqlen {seqlen}"))
            continue
        at = grp[grp["seqlen"].astype(int) == s]
        kernels = list(dict.fromkeys(at["kernel_label"]))
        masks = list(dict.fromkeys(at["mask_label"]))
        val = np.full((len(kernels), len(masks)), np.nan)
        text = [["" for _ in masks] for _ in kernels]
        for _, r in at.iterrows():
            i, j = kernels.index(r["kernel_label"]), masks.index(r["mask_label"])
            v = _value_of(r)
            if v is None:
                text[i][j] = _mark_of(r)
            else:
                val[i, j] = v
                text[i][j] = _num(v)
        with plt.rc_context({**STYLE, "axes.grid": False}):
            size = (max(6.5, 1.2 * len(masks) + 3), max(3.5, 0.7 * len(kernels) + 2.6))
            fig, ax = plt.subplots(figsize=size, layout="constrained")
            ax.set_facecolor("0.88")  # cells without a number
            im = ax.imshow(np.ma.masked_invalid(val), cmap="viridis", aspect="auto")
            finite = val[np.isfinite(val)]
            mid = (finite.min() + finite.max()) / 2 if finite.size else 0
            for i in range(len(kernels)):
                for j in range(len(masks)):
                    dark = np.isfinite(val[i, j]) and val[i, j] < mid
                    ax.text(
                        j,
                        i,
                        text[i][j],
                        ha="center",
                        va="center",
                        fontsize=10,
                        color="white" if dark else "black",
                    )
            ax.set_xticks(range(len(masks)), masks, rotation=30, ha="right")
            ax.set_yticks(range(len(kernels)), kernels)
            ax.set_xlabel("mask")
            ax.set_ylabel("kernel")
            fig.colorbar(im, ax=ax, label="TFLOPs/s")
            title = f"TFLOPs/s at S = {seqlen_text(s)} ({mode})"
            ax.set_title(f"{title}\n{setup}", fontsize=13)
            fig.supxlabel("Grey cells: " + MARK_NOTE, fontsize=9, color="0.3")
            name = slug("heatmap", mode, seqlen_text(s), setup if multi else "")
            png, svg = _save(fig, out, name)
        made.append(
            Figure(
                "heatmap",
                name,
                f"{title} — {setup}",
                png,
                svg,
                f"Kernel x mask TFLOPs/s at sequence length {s}.",
            )
        )
    return made


def _num(v: float) -> str:
    """Short annotation: 612, 37.4, 0.064 (the tables hold the exact numbers)."""
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}" if abs(v) >= 1 or v == 0 else f"{v:.2g}"


def cp_scaling(df: pd.DataFrame, out: Path) -> list[Figure | Skip]:
    """TFLOPs/s per rank vs world, one line per strategy, one panel per mask; one figure per
    scaling series (weak: tokens per rank fixed; strong: total tokens fixed), from the rows."""
    rows = cp_rows(df)
    if rows.empty:
        return [Skip("cp_scaling", "no CP rows (cp != none): nothing to draw scaling from")]
    colors = palette(list(dict.fromkeys(rows["strategy"])))
    made: list[Figure | Skip] = []
    multi = rows["setup"].nunique() > 1
    for (setup, mode), by_mode in rows.groupby(["setup", "mode"], sort=False):
        word = rank_word(by_mode)
        for series in scaling_series(by_mode):
            made.append(_scaling_figure(series, setup, mode, word, colors, out, multi))
    return made


def _scaling_figure(
    series: Series, setup: str, mode: str, word: str, colors: dict, out: Path, multi: bool
) -> Figure:
    grp = series.rows
    masks = list(dict.fromkeys(grp["mask_label"]))
    strategies = list(dict.fromkeys(grp["strategy"]))
    worlds = sorted(grp["world"].astype(int).unique())
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(masks))
        for ax, mask in zip(axes, masks, strict=True):
            sub = grp[grp["mask_label"] == mask]
            vals = [v for v in (_value_of(r) for _, r in sub.iterrows()) if v is not None]
            ymax = max(vals) * 1.15 if vals else 1.0
            marks = []
            for strat in strategies:
                ss = sub[sub["strategy"] == strat].sort_values("world")
                pts = [(int(r["world"]), _value_of(r)) for _, r in ss.iterrows()]
                good = [(w, v) for w, v in pts if v is not None]
                if good:
                    ax.plot(*zip(*good, strict=True), marker="o", color=colors[strat], label=strat)
                for _, r in ss.iterrows():
                    if _value_of(r) is None:
                        marks.append((int(r["world"]), _mark_of(r), colors[strat]))
            _draw_marks(ax, marks, ymax)
            ax.set_ylim(0, ymax)
            if len(worlds) > 1 and worlds[-1] / max(worlds[0], 1) >= 4:
                ax.set_xscale("log", base=2)
            ax.set_xticks(worlds, [str(w) for w in worlds])
            ax.minorticks_off()
            ax.set_title(mask)
            ax.set_xlabel(f"{word}s (world size)")
            ax.set_ylabel(f"TFLOPs/s per {word}")
        handles = [plt.Line2D([0], [0], color=colors[s], marker="o") for s in strategies]
        title = f"Context parallelism, {series.describe(word)} ({mode})"
        _finish(fig, title, setup, (handles, strategies), "Marks at a point's place: " + MARK_NOTE)
        name = slug("cp_scaling", mode, *series.slug_parts(), setup if multi else "")
        png, svg = _save(fig, out, name)
    flat = {
        "weak": " A flat line is perfect weak scaling.",
        "strong": " A flat line is perfect strong scaling.",
    }
    return Figure(
        "cp_scaling",
        name,
        f"{title} — {setup}",
        png,
        svg,
        f"Per-{word} TFLOPs/s (FLOPs / (max-over-ranks time x world)) against the number of {word}s."
        + flat.get(series.kind, ""),
    )


def _is_list(v: object) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0


# Per-rank metrics under the names CP rows use, with the other spellings they may carry.
ALIASES = {
    "rank_exposed_comm_ms": ("rank_exposed_comm_ms", "rank_comm_exposed_ms"),
    "rank_time_ms": ("rank_time_ms_p50", "rank_time_ms"),
}


def _metric(r: pd.Series, key: str) -> object:
    m = r["metrics"] if isinstance(r["metrics"], dict) else {}
    for name in ALIASES.get(key, (key,)):
        if m.get(name) is not None:
            return m[name]
    return None


def _rank_ticks(n: int) -> np.ndarray:
    return np.arange(0, n, max(1, math.ceil(n / 16)))


def _widest_world(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows carrying all `keys` lists at the world where most strategies have them (the largest on ties)."""
    ok = rows[rows.apply(lambda r: all(_is_list(_metric(r, k)) for k in keys), axis=1)]
    if ok.empty:
        return ok
    n = ok.groupby("world")["strategy"].nunique()
    return ok[ok["world"] == max(n[n == n.max()].index)]


def cp_ranks(df: pd.DataFrame, out: Path) -> list[Figure | Skip]:
    """Per-rank compute vs exposed communication (stacked), per mask, at the world most strategies reached."""
    rows = cp_rows(df)
    keys = ["rank_compute_ms", "rank_exposed_comm_ms"]
    if rows.empty:
        return [Skip("cp_ranks", "no CP rows (cp != none): no per-rank compute/communication to draw")]
    made: list[Figure | Skip] = []
    multi = rows["setup"].nunique() > 1
    for (setup, mode, mask), grp in rows.groupby(["setup", "mode", "mask_label"], sort=False):
        at = _widest_world(grp, keys)
        if at.empty:
            made.append(Skip("cp_ranks", f"{mask}, {mode}: no CP row carries per-rank {' and '.join(keys)}"))
            continue
        world = int(at["world"].iloc[0])
        strategies = list(dict.fromkeys(at["strategy"]))
        with plt.rc_context(STYLE):
            fig, axes = _grid(len(strategies), ncols=2, w=6.4, h=3.6)
            top = 0.0
            for ax, strat in zip(axes, strategies, strict=True):
                r = at[at["strategy"] == strat].iloc[-1]
                comp = np.asarray(_metric(r, keys[0]), dtype=float)
                comm = np.asarray(_metric(r, keys[1]), dtype=float)
                ranks = np.arange(len(comp))
                ax.bar(ranks, comp, color="tab:blue", label="compute")
                ax.bar(ranks, comm, bottom=comp, color="tab:orange", label="exposed communication")
                top = max(top, float((comp + comm).max()))
                total = _metric(r, "rank_time_ms")
                if _is_list(total):
                    ax.scatter(ranks, total, marker="_", s=160, color="black", zorder=3, label="rank time")
                    top = max(top, float(np.max(total)))
                ax.set_title(f"{strat}  [{r['status']}]" if r["status"] != "ok" else strat)
                ax.set_xlabel("rank")
                ax.set_ylabel("time per rank (ms)")
                ax.set_xticks(_rank_ticks(len(ranks)))
            for ax in axes:  # one scale, so strategies compare at a glance
                ax.set_ylim(0, top * 1.05)
            handles, labels = axes[0].get_legend_handles_labels()
            title = f"Per-rank compute vs exposed communication ({mask}, {mode}, {world} {rank_word(at)}s)"
            _finish(fig, title, setup, (handles, labels))
            name = slug("cp_ranks", mode, mask, world, setup if multi else "")
            png, svg = _save(fig, out, name)
        made.append(
            Figure(
                "cp_ranks",
                name,
                f"{title} — {setup}",
                png,
                svg,
                "Stacked per rank: compute time and the communication time not hidden behind it "
                "(black tick: the rank's measured time, when recorded).",
            )
        )
    return made


def cp_area(df: pd.DataFrame, out: Path) -> list[Figure | Skip]:
    """Per-rank mask area relative to the mean (1 = balanced), per strategy, at the world most strategies reached."""
    rows = cp_rows(df)
    if rows.empty:
        return [Skip("cp_area", "no CP rows (cp != none): no per-rank area to draw")]
    colors = palette(list(dict.fromkeys(rows["strategy"])))
    made: list[Figure | Skip] = []
    multi = rows["setup"].nunique() > 1
    for (setup, mode), grp in rows.groupby(["setup", "mode"], sort=False):
        panels = []
        for mask, g in grp.groupby("mask_label", sort=False):
            at = _widest_world(g, ["rank_area"])
            if not at.empty:
                panels.append((mask, at))
        if not panels:
            made.append(Skip("cp_area", f"{setup}, {mode}: no CP row carries rank_area"))
            continue
        strategies = list(dict.fromkeys(s for _, at in panels for s in at["strategy"]))
        with plt.rc_context(STYLE):
            fig, axes = _grid(len(panels), ncols=2, w=6.8, h=3.8)
            for ax, (mask, at) in zip(axes, panels, strict=True):
                here = list(dict.fromkeys(at["strategy"]))
                width = 0.8 / len(here)
                top = 1.0
                for k, strat in enumerate(here):
                    r = at[at["strategy"] == strat].iloc[-1]
                    area = np.asarray(_metric(r, "rank_area"), dtype=float)
                    rel = area / area.mean() if area.mean() > 0 else area
                    imb = _metric(r, "area_imbalance")
                    imb = float(imb) if isinstance(imb, (int, float)) else float(rel.max())
                    off = (k - (len(here) - 1) / 2) * width
                    top = max(top, float(rel.max()))
                    ax.bar(
                        np.arange(len(rel)) + off,
                        rel,
                        width=width * 0.95,
                        color=colors[strat],
                        label=f"{strat} ({imb:.2f})",
                    )
                ax.axhline(1.0, color="black", lw=1, ls="--")
                world = int(at["world"].iloc[0])
                ax.set_ylim(0, top * 1.4)  # headroom for the legend of imbalances
                ax.set_title(f"{mask}, {world} {rank_word(at)}s")
                ax.set_xlabel("rank")
                ax.set_ylabel("area / mean area")
                ax.set_xticks(_rank_ticks(world))
                ax.legend(
                    title="imbalance (max / mean)",
                    fontsize=8,
                    title_fontsize=8,
                    loc="upper center",
                    ncol=min(3, len(here)),
                )
            handles = [plt.Rectangle((0, 0), 1, 1, color=colors[s]) for s in strategies]
            title = f"Per-rank attention area, relative to the mean ({mode})"
            _finish(
                fig,
                title,
                setup,
                (handles, strategies),
                "1.0 = perfectly balanced; imbalance = max / mean area",
            )
            name = slug("cp_area", mode, setup if multi else "")
            png, svg = _save(fig, out, name)
        made.append(
            Figure(
                "cp_area",
                name,
                f"{title} — {setup}",
                png,
                svg,
                "Visible (q, k) pairs each rank computes, divided by the mean over ranks (at the world most strategies reached).",
            )
        )
    return made


def compare(long: pd.DataFrame, out: Path, name_a: str, name_b: str) -> list[Figure | Skip]:
    """B/A TFLOPs/s ratio per kernel and seqlen, one panel per mask, one figure per mode."""
    if long.empty or long["B/A"].notna().sum() == 0:
        return [Skip("compare", "no cell has a number in both A and B")]
    made: list[Figure | Skip] = []
    rows = long[long["B/A"].notna()]
    colors = palette(list(dict.fromkeys(rows["kernel"])))
    for mode, grp in rows.groupby("mode", sort=False):
        masks = list(dict.fromkeys(grp["mask"]))
        kernels = list(dict.fromkeys(grp["kernel"]))
        with plt.rc_context(STYLE):
            fig, axes = _grid(len(masks))
            width = min(0.8 / len(kernels), 0.4)
            for ax, mask in zip(axes, masks, strict=True):
                sub = grp[grp["mask"] == mask]
                seqlens = sorted(sub["seqlen"].astype(int).unique())
                for k, kernel in enumerate(kernels):
                    ks = sub[sub["kernel"] == kernel]
                    xs = [seqlens.index(int(s)) + (k - (len(kernels) - 1) / 2) * width for s in ks["seqlen"]]
                    ratio = ks["B/A"].astype(float).to_numpy()
                    # Bars grow from 1 (parity), up when B is faster, down when slower.
                    ax.bar(xs, ratio - 1, bottom=1, width=width * 0.95, color=colors[kernel])
                ax.axhline(1.0, color="black", lw=1)
                r = sub["B/A"].astype(float)
                if max(r.max(), 1) / min(r.min(), 1) > 4:
                    ax.set_yscale("log", base=2)
                    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
                    lo, hi = min(r.min(), 1) / 1.5, max(r.max(), 1) * 1.5
                else:
                    lo, hi = min(r.min(), 1) - 0.1, max(r.max(), 1) + 0.1
                ax.set_ylim(max(lo, 0) if ax.get_yscale() == "linear" else lo, hi)
                ax.set_xlim(-0.5, len(seqlens) - 0.5)
                ax.set_xticks(range(len(seqlens)), [seqlen_text(s) for s in seqlens])
                ax.set_title(mask)
                ax.set_xlabel("sequence length (tokens)")
                ax.set_ylabel("B / A TFLOPs/s ratio")
            handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in kernels]
            title = f"Throughput ratio B / A ({mode})"
            _finish(fig, title, f"A = {name_a}    B = {name_b}", (handles, kernels), "> 1: B is faster")
            name = slug("compare", mode)
            png, svg = _save(fig, out, name)
        made.append(Figure("compare", name, title, png, svg, "B/A TFLOPs/s per kernel and sequence length."))
    return made
