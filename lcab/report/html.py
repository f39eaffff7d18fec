"""index.md and index.html: every table and figure, the environments, and the sweeps' commands."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lcab.report.figures import Figure, Skip
from lcab.report.load import MARK_LEGEND
from lcab.report.tables import Table


@dataclass
class Report:
    out: Path
    stores: list[Path]
    rows_read: int
    rows: pd.DataFrame  # deduplicated
    hidden: int  # older variants of a table cell not shown (same labels, different cell ids)
    tables: list[Table]
    table_files: dict[str, tuple[Path, Path]]  # table name -> (csv, md)
    figures: list[Figure | Skip]
    commands: list[dict]
    compare: dict | None = (
        None  # {"a": label, "b": label, "tables": [...], "figures": [...], "csv": path, "md": path}
    )
    generated: dict = field(default_factory=dict)
    bad_lines: dict = field(default_factory=dict)  # store -> lines that are not rows (skipped)


def bad_lines_note(rep: Report) -> str:
    """Lines of the stores that were not rows (garbage, a fragment a killed writer left)."""
    if not rep.bad_lines:
        return ""
    per = ", ".join(f"{p} ({n})" for p, n in rep.bad_lines.items())
    return f"Skipped {sum(rep.bad_lines.values())} line(s) that are not result rows: {per}."


def environments(df: pd.DataFrame) -> list[dict]:
    keys = ["device", "torch", "cuda", "cudnn", "python", "git_sha", "host"]
    seen: dict[str, dict] = {}
    for _, r in df.iterrows():
        env = r["env"] if isinstance(r["env"], dict) else {}
        if not env:
            continue  # an invalid config fails before the environment is read
        entry = {k: env.get(k) for k in keys}
        entry["packages"] = env.get("kernel_packages") or {}
        key = json.dumps(entry, sort_keys=True, default=str)
        if key not in seen:
            seen[key] = {**entry, "rows": 0, "sweeps": []}
        seen[key]["rows"] += 1
        sweep = r["sweep"] or r["source"]
        if sweep not in seen[key]["sweeps"]:
            seen[key]["sweeps"].append(sweep)
    return list(seen.values())


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _packages(p: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(p.items())) or "none recorded"


def _status_counts(df: pd.DataFrame) -> str:
    return ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items())


def not_run(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(status, cell, reason) of every row without a number, so each mark in a table has its why."""
    out = []
    for _, r in df[df["status"] != "ok"].iterrows():
        if r["cell_id"] == "invalid-config":
            cell = "invalid config"
        else:
            cp = "" if r["cp"] == "none" else f" {r['cp']}/{r['shard']} x{r['world']}"
            cell = f"{r['kernel']}{cp} {r['mask']} S={r['seqlen']} {r['mode']} ({r['device']})"
        out.append((str(r["status"]), cell, str(r["reason"])))
    return out


def _sections(rep: Report) -> list[tuple[str, list[Table]]]:
    kern = [t for t in rep.tables if t.kind == "kernel"]
    cp = [t for t in rep.tables if t.kind == "cp"]
    return [("Kernels: TFLOPs/s by sequence length", kern), ("Context parallelism: TFLOPs/s per rank", cp)]


def write_markdown(rep: Report) -> Path:
    out = rep.out
    md = ["# lcab report", ""]
    md.append(
        f"{len(rep.rows)} cells from {rep.rows_read} rows in {len(rep.stores)} store(s) "
        f"({_status_counts(rep.rows)}); newest row per cell id and device."
    )
    if rep.hidden:
        md.append(f"{rep.hidden} older row(s) of the same table cell (other settings) are not shown.")
    md += ["", "Stores: " + ", ".join(f"`{s}`" for s in rep.stores), ""]
    if rep.bad_lines:
        md += [bad_lines_note(rep), ""]
    md += ["Marks: " + "; ".join(f"**{m}** = {t}" for m, t in MARK_LEGEND.items()), ""]
    md += [
        "## Environments",
        "",
        "| device | torch | CUDA | python | git sha | packages | rows |",
        "|---|---|---|---|---|---|---:|",
    ]
    for e in environments(rep.rows):
        md.append(
            f"| {e['device']} | {e['torch']} | {e['cuda'] or '-'} | {e['python']} | `{e['git_sha']}` | "
            f"{_packages(e['packages'])} | {e['rows']} |"
        )
    md += ["", "## Commands", ""]
    for c in rep.commands:
        md.append(f"Sweep `{c['sweep']}` ({c['rows']} rows, {c['source']}):")
        md += ["", "```bash", *c["commands"], "```", ""]
    for heading, tables in _sections(rep):
        md += [f"## {heading}", ""]
        if not tables:
            md += ["No rows of this kind.", ""]
        for t in tables:
            csv, _ = rep.table_files[t.name]
            md += [f"### {t.title}", "", t.markdown(), "", f"CSV: [{_rel(csv, out)}]({_rel(csv, out)})", ""]
    failed = not_run(rep.rows)
    if failed:
        md += ["## Cells without a number", "", "| status | cell | reason |", "|---|---|---|"]
        md += [f"| {st} | {c} | {why.replace('|', '/')} |" for st, c, why in failed] + [""]
    md += ["## Figures", ""]
    for f in rep.figures:
        if isinstance(f, Figure):
            md += [f"### {f.title}", "", f.description, "", f"![{f.title}]({_rel(f.png, out)})", ""]
            md += [f"SVG: [{_rel(f.svg, out)}]({_rel(f.svg, out)})", ""]
    skips = [f for f in rep.figures if isinstance(f, Skip)]
    if skips:
        md += ["### Figures not drawn", ""] + [f"- {s.kind}: {s.reason}" for s in skips] + [""]
    if rep.compare:
        c = rep.compare
        md += ["## Comparison", "", f"A = {c['a']}; B = {c['b']}.", ""]
        for t in c["tables"]:
            md += [f"### {t.title}", "", t.markdown(), ""]
        for f in c["figures"]:
            if isinstance(f, Figure):
                md += [f"![{f.title}]({_rel(f.png, out)})", ""]
            else:
                md += [f"- figure not drawn: {f.reason}", ""]
        md += [f"CSV: [{_rel(c['csv'], out)}]({_rel(c['csv'], out)})", ""]
    md += [
        "---",
        "",
        f"Generated by `{rep.generated.get('command', 'python -m lcab.report')}` at {rep.generated.get('at', '')}.",
    ]
    path = out / "index.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return path


CSS = """
body { font-family: system-ui, -apple-system, 'DejaVu Sans', sans-serif; margin: 24px auto; max-width: 1400px;
       padding: 0 16px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 9px; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.mark { text-align: center; font-weight: bold; background: #f6f6f6; color: #a33; }
td.label { text-align: left; white-space: nowrap; }
pre { background: #f5f5f5; padding: 8px; overflow-x: auto; }
img { max-width: 100%; border: 1px solid #ddd; margin: 6px 0; }
.small { color: #666; font-size: 13px; }
"""


def _cell_html(t: Table, col: object, v: object) -> str:
    text = html.escape(t.cell_text(col, v))
    if isinstance(v, float):
        return f'<td class="num" title="{v!r}">{text}</td>'
    return f'<td class="mark">{text}</td>' if text else "<td></td>"


def table_html(t: Table) -> str:
    cols = list(t.frame.columns)
    head = "".join(f"<th>{html.escape(t.column_text.get(c, str(c)))}</th>" for c in cols)
    body = []
    for idx, row in t.frame.iterrows():
        label = " / ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
        cells = "".join(_cell_html(t, c, row[c]) for c in cols)
        body.append(f'<tr><td class="label">{html.escape(label)}</td>{cells}</tr>')
    return f"<table><tr><th>{html.escape(t.index_name)}</th>{head}</tr>{''.join(body)}</table>"


def write_html(rep: Report) -> Path:
    out = rep.out
    e = html.escape
    h = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8"><title>lcab report</title>']
    h += [f"<style>{CSS}</style></head><body>", "<h1>lcab report</h1>"]
    h.append(
        f"<p>{len(rep.rows)} cells from {rep.rows_read} rows in {len(rep.stores)} store(s) "
        f"({e(_status_counts(rep.rows))}); newest row per cell id and device."
        + (
            f" {rep.hidden} older row(s) of the same table cell (other settings) are not shown."
            if rep.hidden
            else ""
        )
        + "</p>"
    )
    h.append(
        "<p class='small'>Stores: " + ", ".join(f"<code>{e(str(s))}</code>" for s in rep.stores) + "</p>"
    )
    if rep.bad_lines:
        h.append(f"<p class='small'>{e(bad_lines_note(rep))}</p>")
    h.append(
        "<p class='small'>Marks: "
        + "; ".join(f"<b>{e(m)}</b> = {e(t)}" for m, t in MARK_LEGEND.items())
        + "</p>"
    )
    h.append("<h2>Environments</h2><table><tr><th>device</th><th>torch</th><th>CUDA</th><th>python</th>")
    h.append("<th>git sha</th><th>packages</th><th>rows</th></tr>")
    for env in environments(rep.rows):
        h.append(
            f"<tr><td class='label'>{e(str(env['device']))}</td><td>{e(str(env['torch']))}</td>"
            f"<td>{e(str(env['cuda'] or '-'))}</td><td>{e(str(env['python']))}</td>"
            f"<td><code>{e(str(env['git_sha']))}</code></td><td>{e(_packages(env['packages']))}</td>"
            f"<td class='num'>{env['rows']}</td></tr>"
        )
    h.append("</table><h2>Commands</h2>")
    for c in rep.commands:
        h.append(f"<p>Sweep <code>{e(str(c['sweep']))}</code> ({c['rows']} rows, {e(c['source'])}):</p>")
        h.append("<pre>" + e("\n".join(c["commands"])) + "</pre>")
    for heading, tables in _sections(rep):
        h.append(f"<h2>{e(heading)}</h2>")
        if not tables:
            h.append("<p>No rows of this kind.</p>")
        for t in tables:
            csv, md = rep.table_files[t.name]
            h.append(f"<h3>{e(t.title)}</h3>{table_html(t)}")
            h.append(
                f"<p class='small'><a href='{e(_rel(csv, out))}'>CSV</a> · <a href='{e(_rel(md, out))}'>markdown</a></p>"
            )
    failed = not_run(rep.rows)
    if failed:
        h.append("<h2>Cells without a number</h2><table><tr><th>status</th><th>cell</th><th>reason</th></tr>")
        h += [
            f"<tr><td>{e(st)}</td><td class='label'>{e(c)}</td><td>{e(why)}</td></tr>"
            for st, c, why in failed
        ]
        h.append("</table>")
    h.append("<h2>Figures</h2>")
    for f in rep.figures:
        if isinstance(f, Figure):
            h.append(
                f"<h3>{e(f.title)}</h3><p class='small'>{e(f.description)} <a href='{e(_rel(f.svg, out))}'>SVG</a></p>"
            )
            h.append(f"<img src='{e(_rel(f.png, out))}' alt='{e(f.title)}'>")
    skips = [f for f in rep.figures if isinstance(f, Skip)]
    if skips:
        h.append(
            "<h3>Figures not drawn</h3><ul>"
            + "".join(f"<li>{e(s.kind)}: {e(s.reason)}</li>" for s in skips)
            + "</ul>"
        )
    if rep.compare:
        c = rep.compare
        h.append(f"<h2>Comparison</h2><p>A = {e(c['a'])}; B = {e(c['b'])}.</p>")
        for t in c["tables"]:
            h.append(f"<h3>{e(t.title)}</h3>{table_html(t)}")
        for f in c["figures"]:
            if isinstance(f, Figure):
                h.append(f"<img src='{e(_rel(f.png, out))}' alt='{e(f.title)}'>")
            else:
                h.append(f"<p>Figure not drawn: {e(f.reason)}</p>")
        h.append(
            f"<p class='small'><a href='{e(_rel(c['csv'], out))}'>compare.csv</a> · <a href='{e(_rel(c['md'], out))}'>compare.md</a></p>"
        )
    h.append(
        f"<hr><p class='small'>Generated by <code>{e(rep.generated.get('command', 'python -m lcab.report'))}</code>"
        f" at {e(rep.generated.get('at', ''))}.</p></body></html>"
    )
    path = out / "index.html"
    path.write_text("\n".join(h) + "\n", encoding="utf-8")
    return path
