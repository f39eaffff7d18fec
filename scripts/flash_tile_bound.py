"""Why a flash kernel's mask-aware TFLOPs/s on a mask sit below its full-mask TFLOPs/s: the tiles.

    python scripts/flash_tile_bound.py STORE [--kernel flash4] [--seqlen 32768]

FlashAttention computes whole tiles and, for packed documents (varlen), tiles each document
from its own first row. So per mask and mode this prints the tile occupancy (visible pairs /
pairs in the touched tiles) for the tile FlashAttention-4 uses on SM90 at head_dim 128 (forward
128 x 128; backward 64 x 128 query x key, 80 x 128 when neither causal nor windowed; from its
interface's _tile_size_*_sm90), the measured TFLOPs/s, the fraction of the same kernel's full-mask
TFLOPs/s, and the rate on the touched tiles relative to full (measured / occupancy / full): near
1 means the shortfall is the partial tiles' wasted pairs; below 1 is per-tile cost beyond them.
"""

from __future__ import annotations

import argparse

from lcab.config import mask_config
from lcab.masks import build
from lcab.masks.forms import varlen_form
from lcab.masks.slices import AttnMask
from lcab.masks.tiles import touched_pairs
from lcab.results.store import read_rows


def _docs(mask: AttnMask) -> list[AttnMask]:
    """The mask as FlashAttention tiles it: one grid per packed document where it is varlen."""
    form = varlen_form(mask)
    if form is None or len(form.doc_lens) == 1:
        return [mask]
    from lcab.cp.submask import Run, submask

    out = []
    for a, b in zip(form.cu_seqlens[:-1], form.cu_seqlens[1:], strict=True):
        sm = submask(mask, [Run(int(a), int(b), 0)], [Run(int(a), int(b), 0)])
        if sm is not None:
            out.append(sm.mask)
    return out


def occupancy(mask: AttnMask, tile_q: int, tile_k: int) -> float:
    docs = _docs(mask)
    return sum(d.area for d in docs) / sum(touched_pairs(d, tile_q, tile_k) for d in docs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--kernel", default="flash4")
    ap.add_argument("--seqlen", type=int, default=32768)
    a = ap.parse_args()
    rows = [
        r
        for r in read_rows(a.store)
        if r["status"] == "ok"
        and r["config"]["kernel"]["name"] == a.kernel
        and r["config"]["seqlen"] == a.seqlen
        and r["config"]["cp"]["name"] == "none"
    ]
    by = {(r["config"]["mask"]["name"], r["config"]["bench"]["mode"]): r for r in rows}
    print(f"{a.kernel}, S={a.seqlen}: occupancy of the touched tiles and the rate on them vs full")
    print(
        f"{'mask':24s} {'mode':4s} {'tile':7s} {'occupancy':>9s} {'TFLOPs/s':>9s} {'of full':>8s} {'tile rate':>9s}"
    )
    for (name, mode), r in sorted(by.items()):
        full = by.get(("full", mode))
        if full is None:
            continue
        mask = build(mask_config(r["config"]["mask"]), a.seqlen)
        # FA4's SM90 backward tile is 64 x 128 with a causal flag or a window, else 80 x 128
        # (mask_mod cells run neither).
        form = varlen_form(mask)
        banded = form is not None and (form.causal or form.has_window)
        tq, tk = (128, 128) if mode == "fwd" else ((64 if banded else 80), 128)
        occ = occupancy(mask, tq, tk)
        t, f = r["metrics"]["tflops"], full["metrics"]["tflops"]
        print(f"{name:24s} {mode:4s} {tq}x{tk:<4d} {occ:9.3f} {t:9.1f} {t / f:8.3f} {t / occ / f:9.3f}")


if __name__ == "__main__":
    main()
