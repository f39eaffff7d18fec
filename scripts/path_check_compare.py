"""Old vs new rows of scripts/gpu_path_check.sh: per-cell TFLOPs/s ratios, run-to-run noise,
and the emulated cells against a committed store (same cell ids?).
    python scripts/path_check_compare.py DIR [COMMITTED_EMULATION_STORE]"""

import statistics
import sys

from lcab.results.store import read_rows

d = sys.argv[1].rstrip("/") + "/"
committed = sys.argv[2] if len(sys.argv) > 2 else "docs/results/h200_cp_emulate/results.jsonl"


def key(r):
    c = r["config"]
    return (
        c["kernel"]["name"],
        c["cp"]["name"],
        c["cp"].get("shard"),
        c["mask"]["name"],
        c["bench"]["mode"],
        c["seqlen"],
    )


def load(f):
    return {key(r): r for r in read_rows(d + f)}


o1, o2, n1, n2 = (load(f"kernels_{a}_{i}.jsonl") for a, i in (("old", 1), ("old", 2), ("new", 1), ("new", 2)))
print(
    f"{'kernel':<11}{'mask':<16}{'mode':<4} {'old1':>7} {'old2':>7} {'new1':>7} {'new2':>7}  old2/old1 new2/new1 new/old(mean)"
)
rat = []
noise = []
for k in o1:
    if o1[k]["status"] != "ok":
        print(
            k[0],
            k[3],
            k[4],
            o1[k]["status"],
            n1[k]["status"],
            "same reason" if o1[k]["reason"] == n1[k]["reason"] else (o1[k]["reason"], n1[k]["reason"]),
        )
        continue
    t = [x[k]["metrics"]["tflops"] for x in (o1, o2, n1, n2)]
    r = (t[2] + t[3]) / (t[0] + t[1])
    rat.append(r)
    noise += [t[1] / t[0], t[3] / t[2]]
    print(
        f"{k[0]:<11}{k[3]:<16}{k[4]:<4} {t[0]:7.1f} {t[1]:7.1f} {t[2]:7.1f} {t[3]:7.1f}  {t[1] / t[0]:9.3f} {t[3] / t[2]:9.3f} {r:9.3f}"
    )
print(
    "new/old: median %.3f, range %.3f..%.3f; run-to-run (same code): range %.3f..%.3f"
    % (statistics.median(rat), min(rat), max(rat), min(noise), max(noise))
)
eo, en = load("emulate_old.jsonl"), load("emulate_new.jsonl")
com = {key(r): r for r in read_rows(committed) if r["status"] == "ok"}
print(
    f"\n{'cp':<8}{'shard':<9}{'mask':<16} {'committed':>9} {'old':>7} {'new':>7}  new/old new/committed  (TFLOPs/s per emulated GPU; max-rank ms old/new)  ids equal"
)
for k in eo:
    a, b = eo[k]["metrics"], en[k]["metrics"]
    c = com.get(k, {}).get("metrics", {})
    ct = c.get("tflops")
    print(
        f"{k[1]:<8}{k[2]:<9}{k[3]:<16} {ct if ct is None else round(ct, 1)!s:>9} {a['tflops']:7.1f} {b['tflops']:7.1f}  {b['tflops'] / a['tflops']:7.3f} {'' if ct is None else round(b['tflops'] / ct, 3)!s:>12}   {a['time_ms_p50']:.2f}/{b['time_ms_p50']:.2f}   {eo[k]['cell_id'] == en[k]['cell_id']} {com.get(k, {}).get('cell_id') == en[k]['cell_id']}"
    )
    for f in ("rank_area", "rank_bytes_sent_counted", "area_imbalance"):
        if a.get(f) != b.get(f):
            print("   DIFF", f, a.get(f), b.get(f))
