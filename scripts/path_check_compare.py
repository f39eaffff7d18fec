"""Old vs new rows of scripts/gpu_path_check.sh: per-cell TFLOPs/s ratios, run-to-run noise,
and the emulated cells against a committed store (same numbers, same cell ids?).

    python scripts/path_check_compare.py DIR [COMMITTED_EMULATION_STORE]
"""

from __future__ import annotations

import statistics
import sys

from lcab.results.store import read_rows


def key(r: dict) -> tuple:
    c = r["config"]
    cp = c["cp"]
    return (
        c["kernel"]["name"],
        cp["name"],
        cp.get("shard"),
        c["mask"]["name"],
        c["bench"]["mode"],
        c["seqlen"],
    )


def load(path: str) -> dict[tuple, dict]:
    return {key(r): r for r in read_rows(path)}


def kernels(d: str) -> None:
    o1, o2, n1, n2 = (
        load(f"{d}/kernels_{a}_{i}.jsonl") for a, i in (("old", 1), ("old", 2), ("new", 1), ("new", 2))
    )
    print(
        f"{'kernel':<11}{'mask':<16}{'mode':<4} {'old1':>7} {'old2':>7} {'new1':>7} {'new2':>7}  old2/old1 new2/new1 new/old(mean)"
    )
    ratios, noise = [], []
    for k, row in o1.items():
        if row["status"] != "ok":
            same = "same reason" if row["reason"] == n1[k]["reason"] else (row["reason"], n1[k]["reason"])
            print(k[0], k[3], k[4], row["status"], n1[k]["status"], same)
            continue
        t = [x[k]["metrics"]["tflops"] for x in (o1, o2, n1, n2)]
        r = (t[2] + t[3]) / (t[0] + t[1])
        ratios.append(r)
        noise += [t[1] / t[0], t[3] / t[2]]
        print(
            f"{k[0]:<11}{k[3]:<16}{k[4]:<4} {t[0]:7.1f} {t[1]:7.1f} {t[2]:7.1f} {t[3]:7.1f}"
            f"  {t[1] / t[0]:9.3f} {t[3] / t[2]:9.3f} {r:9.3f}"
        )
    print(
        f"new/old: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}..{max(ratios):.3f};"
        f" run-to-run (same code): range {min(noise):.3f}..{max(noise):.3f}"
    )


def emulated(d: str, committed: str) -> None:
    eo, en = load(f"{d}/emulate_old.jsonl"), load(f"{d}/emulate_new.jsonl")
    com = {key(r): r for r in read_rows(committed) if r["status"] == "ok"}
    print(
        f"\n{'cp':<8}{'shard':<9}{'mask':<16} {'committed':>9} {'old':>7} {'new':>7}  new/old new/committed"
        "  (TFLOPs/s per emulated GPU; max-rank ms old/new)  ids equal"
    )
    for k, old in eo.items():
        a, b = old["metrics"], en[k]["metrics"]
        ct = com.get(k, {}).get("metrics", {}).get("tflops")
        shown = "None" if ct is None else str(round(ct, 1))
        vs = "" if ct is None else str(round(b["tflops"] / ct, 3))
        same_ids = f"{old['cell_id'] == en[k]['cell_id']} {com.get(k, {}).get('cell_id') == en[k]['cell_id']}"
        print(
            f"{k[1]:<8}{k[2]:<9}{k[3]:<16} {shown:>9} {a['tflops']:7.1f} {b['tflops']:7.1f}"
            f"  {b['tflops'] / a['tflops']:7.3f} {vs:>12}   {a['time_ms_p50']:.2f}/{b['time_ms_p50']:.2f}   {same_ids}"
        )
        for f in ("rank_area", "rank_bytes_sent_counted", "area_imbalance"):
            if a.get(f) != b.get(f):
                print("   DIFF", f, a.get(f), b.get(f))


if __name__ == "__main__":
    out = sys.argv[1].rstrip("/")
    kernels(out)
    emulated(out, sys.argv[2] if len(sys.argv) > 2 else "docs/results/h200_cp_emulate/results.jsonl")
