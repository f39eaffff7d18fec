"""The issue's one-GPU CP benchmark: cp.emulate=8, 8K tokens per rank (S = 64K), causal and
causal_document, ring (zigzag, balanced), ring_allgather, usp, double_ring, ulysses, one kernel.

Runs `python -m lcab.run -m ...` (rows land in the store) and prints a table from the store:

    python scripts/cp_emulate_bench.py --kernel sdpa_cudnn --store outputs/cp_emulate.jsonl
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from lcab.results.store import read_rows

RUNS = [  # (cp, shard, extra overrides)
    ("ring", "zigzag", []),
    ("ring", "balanced", []),
    ("ring_allgather", "zigzag", []),
    ("usp", "zigzag", ["cp.ulysses_degree=2"]),
    ("double_ring", "zigzag", []),
    ("ulysses", "zigzag", []),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="sdpa_cudnn")
    ap.add_argument("--world", type=int, default=8)
    ap.add_argument("--tokens-per-rank", default="8k")
    ap.add_argument("--masks", default="causal,causal_document")
    ap.add_argument("--mode", default="fwd_bwd")
    ap.add_argument("--store", default="outputs/cp_emulate.jsonl")
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides, e.g. bench.iters=10")
    ap.add_argument(
        "--only", default="", help="run only these cp[:shard] entries, e.g. double_ring,ring:balanced"
    )
    a = ap.parse_args()
    per = int(a.tokens_per_rank.lower().rstrip("k")) * (
        1024 if a.tokens_per_rank.lower().endswith("k") else 1
    )
    seqlen = per * a.world
    root = Path(__file__).resolve().parents[1]
    wanted = {w for w in a.only.split(",") if w}
    for cp, shard, extra in RUNS:
        if wanted and cp not in wanted and f"{cp}:{shard}" not in wanted:
            continue
        cmd = [
            sys.executable,
            "-m",
            "lcab.run",
            "-m",
            f"cp={cp}",
            f"cp.shard={shard}",
            f"cp.emulate={a.world}",
            f"kernel={a.kernel}",
            f"mask={a.masks}",
            f"seqlen={seqlen}",
            f"bench.mode={a.mode}",
            f"store={a.store}",
            *extra,
            *a.extra,
        ]
        print("+", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=root, check=False)
    table(Path(root, a.store) if not Path(a.store).is_absolute() else Path(a.store), a.kernel, seqlen)
    return 0


def table(store: Path, kernel: str, seqlen: int) -> None:
    rows = read_rows(store)
    rows = [
        r
        for r in rows
        if r["config"].get("kernel", {}).get("name") == kernel
        and r["config"].get("seqlen") == seqlen
        and int(r["config"].get("cp", {}).get("emulate", 0) or 0) > 0
    ]
    hdr = f"{'mask':<16} {'cp':<15} {'shard':<9} {'status':<11} {'max ms':>9} {'mono ms':>9} {'eff':>6} {'imbal':>6} {'TF/s/GPU':>9}"
    print(hdr)
    print("-" * len(hdr))
    for r in sorted(
        rows,
        key=lambda r: (r["config"]["mask"]["name"], r["config"]["cp"]["name"], r["config"]["cp"]["shard"]),
    ):
        m, c = r.get("metrics", {}), r["config"]
        if r["status"] != "ok":
            print(
                f"{c['mask']['name']:<16} {c['cp']['name']:<15} {c['cp']['shard']:<9} {r['status']:<11} {r['reason'][:60]}"
            )
            continue
        print(
            f"{c['mask']['name']:<16} {c['cp']['name']:<15} {c['cp']['shard']:<9} {'ok':<11} "
            f"{m['compute_ms_max']:>9.2f} {m['mono_ms']:>9.2f} {m['compute_efficiency']:>6.2f} "
            f"{m['area_imbalance']:>6.2f} {m['tflops']:>9.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
