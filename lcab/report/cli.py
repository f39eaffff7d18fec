"""`python -m lcab.report <dirs|globs|files> [--out DIR] [--seqlen S] [--compare A B]`."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from pathlib import Path

import pandas as pd

from lcab.report import figures, tables
from lcab.report.commands import sweep_commands
from lcab.report.html import Report, bad_lines_note, write_html, write_markdown
from lcab.report.load import NoResults, dedup_cells, find_stores, load, measurable
from lcab.results.store import bad_lines

# Long-form columns of cells.csv: what a cell is, and its main numbers.
CELL_COLUMNS = [
    "cell_id", "status", "reason", "kernel", "mask", "seqlen", "mode", "cp", "shard", "world", "device",
    "shape", "metrics.time_ms_p20", "metrics.time_ms_p50", "metrics.time_ms_p80", "tflops", "metrics.mfu",
    "metrics.peak_mem_gib", "metrics.area", "finished_at", "sweep", "source",
]  # fmt: skip


def _clean(out: Path) -> None:
    """Drop this command's own earlier outputs so a figure that is no longer drawn does not linger."""
    for sub, exts in (("tables", ("*.csv", "*.md")), ("figures", ("*.png", "*.svg"))):
        for ext in exts:
            for p in (out / sub).glob(ext):
                p.unlink()


def _side_label(df: pd.DataFrame, path: str) -> str:
    devices = ", ".join(dict.fromkeys(df["device"]))
    return f"{devices} ({path})"


def _compare(a_path: str, b_path: str, out: Path) -> dict:
    a = tables.add_labels(measurable(load([a_path])))
    b = tables.add_labels(measurable(load([b_path])))
    name_a, name_b = _side_label(a, a_path), _side_label(b, b_path)
    long = tables.compare_frame(a, b)
    tabs = tables.compare_tables(long, name_a, name_b)
    csv, md = out / "compare.csv", out / "compare.md"
    long.to_csv(csv, index=False)
    head = f"# Comparison\n\nA = {name_a}\n\nB = {name_b}\n\n"
    body = (
        "\n\n".join(f"### {t.title}\n\n{t.markdown()}" for t in tabs) or "No single-device cells in common."
    )
    md.write_text(head + body + "\n", encoding="utf-8")
    figs = figures.compare(long, out / "figures", name_a, name_b)
    return {"a": name_a, "b": name_b, "tables": tabs, "figures": figs, "csv": csv, "md": md}


def render(
    paths: list[str],
    out: str | Path,
    seqlen: int | None = None,
    compare: tuple[str, str] | None = None,
    argv: list[str] | None = None,
) -> Report:
    """Read the stores under `paths`, write tables, figures, index.md and index.html under `out`."""
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    _clean(out)
    sources = list(paths) or (list(compare) if compare else [])
    stores = find_stores(sources)
    everything = load(sources, dedup=False)
    df = dedup_cells(everything).reset_index(drop=True)
    cells = tables.add_labels(measurable(df))
    kern, hidden_k = tables.kernel_tables(cells)
    cp, hidden_c = tables.cp_tables(cells)
    from lcab.report import efficiency  # imports paper_cp, which `python -m` may run as __main__

    cp += efficiency.tables(df)  # CP cells against their single-GPU baselines in the same stores
    from lcab.predict import report as predicted  # lcab.predict's model beside the measurements

    cp += predicted.tables(df)
    files = {t.name: t.write(out / "tables") for t in [*kern, *cp]}
    df[[c for c in CELL_COLUMNS if c in df.columns]].to_csv(out / "tables" / "cells.csv", index=False)
    fig_dir = out / "figures"
    figs: list = []
    figs += figures.bars(cells, fig_dir)
    figs += figures.heatmap(cells, fig_dir, seqlen)
    figs += figures.cp_scaling(cells, fig_dir)
    figs += figures.cp_ranks(cells, fig_dir)
    figs += figures.cp_area(cells, fig_dir)
    figs += predicted.figures(df, fig_dir)  # predicted TFLOPs/s per GPU, 8..1024 GPUs
    rep = Report(
        out=out,
        stores=stores,
        rows_read=len(everything),
        rows=df,
        hidden=hidden_k + hidden_c,
        tables=[*kern, *cp],
        table_files=files,
        figures=figs,
        commands=sweep_commands(everything),
        compare=_compare(*compare, out) if compare else None,
        bad_lines={str(p): n for p in stores if (n := bad_lines(p))},
        generated={
            "command": shlex.join(["python", "-m", "lcab.report", *(argv if argv is not None else sources)]),
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    write_markdown(rep)
    write_html(rep)
    return rep


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m lcab.report",
        description="Tables, figures and an index (HTML + markdown) from lcab results stores.",
    )
    ap.add_argument(
        "paths", nargs="*", help="directories (searched for every *.jsonl), globs, or JSONL files"
    )
    ap.add_argument("--out", default="report", help="output directory (default: ./report)")
    ap.add_argument("--seqlen", help="sequence length of the kernel x mask heatmap (default: longest common)")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two stores side by side, with B/A ratios")
    args = ap.parse_args(argv)
    if not args.paths and not args.compare:
        ap.error("give at least one results directory, glob or file (or --compare A B)")
    seqlen = None
    if args.seqlen:
        from lcab.config import ConfigError, parse_seqlen

        try:
            seqlen = parse_seqlen(args.seqlen)
        except ConfigError as exc:
            ap.error(str(exc))
    try:
        rep = render(args.paths, args.out, seqlen, tuple(args.compare) if args.compare else None,
                     argv if argv is not None else sys.argv[1:])  # fmt: skip
    except NoResults as exc:
        print(f"lcab.report: {exc}", file=sys.stderr)
        sys.exit(2)
    drawn = sum(isinstance(f, figures.Figure) for f in rep.figures)
    skipped = [f for f in rep.figures if isinstance(f, figures.Skip)]
    print(
        f"lcab.report: {len(rep.rows)} cells from {len(rep.stores)} store(s) -> {len(rep.tables)} tables, {drawn} figures"
    )
    if rep.bad_lines:
        print(f"  {bad_lines_note(rep)}")
    for s in skipped:
        print(f"  figure not drawn ({s.kind}): {s.reason}")
    if rep.compare:
        print(f"  comparison: {rep.out / 'compare.md'}")
    print(f"  {rep.out / 'index.html'}\n  {rep.out / 'index.md'}")
