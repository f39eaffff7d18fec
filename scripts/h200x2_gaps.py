"""Where a CP cell's time goes against half the single-GPU kernel's time (issue 16):

    python scripts/h200x2_gaps.py docs/results/h200x2/results.jsonl [--tokens 16384] [--emulated E.jsonl]

Per ok CP cell at TOKENS per GPU, with T1 = the cp=none baseline's p50 at the same total length
(one GPU does all the work) and T = the CP cell's p50 (slowest rank per iteration):
  ideal = T1 / world                       what a perfect split would take
  kernel = mean rank compute - ideal       step kernels on sub-masks slower than the whole call
  imbalance = max rank compute - mean      the slower rank's extra compute
  outside = T - max rank compute           exposed communication, layout copies, waiting
efficiency = ideal / T (the tflops ratio of the table up to rounding); kernel eff. = ideal /
mean compute. Regions (rank_region_ms, max over ranks): comm (collectives as seen by the
timer) and layout (copies around them); isolated = the collectives replayed alone.
"""

from __future__ import annotations

import argparse

from lcab.report.efficiency import _isolated_ms, _region_max, baseline_of, baselines
from lcab.report.load import load
from lcab.report.paper_cp import _num, emulated_cells, real_cells

COLS = (
    "| strategy | kernel | mask | mode | eff. | T ms | ideal ms | kernel ms (eff.) | imbalance ms "
    "| outside ms | comm region ms | layout ms | isolated ms | emulated compute eff. |"
)


def _g(x: float | None) -> str:
    return "" if x is None else f"{x:.3g}"


def gaps(results: str, tokens: int, emulated: str | None) -> str:
    df = load([results] + ([emulated] if emulated else []))
    base = baselines(df)
    emu = {
        (r["cp"], r["shard"], r["kernel"], r["mask"], r["seqlen"], r["mode"]): r["metrics"]
        for r in emulated_cells(df).to_dict("records")
        if r["status"] == "ok"
    }
    out = [COLS, "|" + "---|" * 4 + "---:|" * 10]
    cells = real_cells(df)
    cells = cells[(cells["status"] == "ok") & (cells["seqlen"] // cells["world"] == tokens)]
    for r in sorted(
        cells.to_dict("records"), key=lambda r: (r["kernel"], r["cp"], r["shard"], r["mask"], r["mode"])
    ):
        m, b = r["metrics"] or {}, baseline_of(r, base)
        t, ranks = _num(m.get("time_ms_p50")), [_num(x) for x in m.get("rank_compute_ms") or []]
        if b is None or b["status"] != "ok" or t is None or not ranks or None in ranks:
            continue
        ideal = _num(b["metrics"].get("time_ms_p50")) / int(r["world"])
        mean, top = sum(ranks) / len(ranks), max(ranks)
        separable = top > 0  # torch_ring: its compute is not separable (recorded as 0)
        e = emu.get((r["cp"], r["shard"], r["kernel"], r["mask"], r["seqlen"], r["mode"]))
        out.append(
            f"| {r['cp']}/{r['shard']} | {r['kernel']} | {r['mask']} | {r['mode']} | {ideal / t:.3f} | {_g(t)} "
            f"| {_g(ideal)} | {_g(mean - ideal) + f' ({ideal / mean:.3f})' if separable else ''} "
            f"| {_g(top - mean) if separable else ''} | {_g(t - top) if separable else ''} "
            f"| {_g(_region_max(m, 'comm'))} | {_g(_region_max(m, 'layout'))} | {_g(_isolated_ms(m))} "
            f"| {_g(_num((e or {}).get('compute_efficiency')))} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--emulated", default=None)
    a = ap.parse_args(argv)
    print(gaps(a.results, a.tokens, a.emulated), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
