"""`python -m lcab.report.paper` on rows of a real CPU sweep: the anchor comparison, each
kernel's mask-vs-full fraction and the fastest-kernel table, checked against the raw rows."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
from lcab_cli import lcab_run, rows
from lcab_cli import run_module as lcab_module

from lcab.config import mask_config
from lcab.masks import build as build_mask
from lcab.masks.tiles import tile_occupancy
from lcab.report import paper


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper")
    store = tmp / "results.jsonl"
    p = lcab_run(
        tmp,
        "-m",
        "kernel=sdpa_math,torch,sdpa_flash",
        "mask=full,causal,share_question",
        "seqlen=256,512",
        "bench.mode=fwd",
        "bench.warmup=0",
        "bench.iters=3",
        f"store={store}",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = rows(store)
    # One real row relabelled as an anchored cell (sdpa_cudnn full 32K fwd), to check the ratio.
    anchored = copy.deepcopy(next(r for r in got if r["status"] == "ok"))
    anchored["cell_id"] = "anchored"
    anchored["config"].update(seqlen=32768, kernel={"name": "sdpa_cudnn"}, mask={"name": "full"})
    anchored["metrics"]["n_docs"] = 7  # to see it carried into the table
    with store.open("a") as f:
        f.write(json.dumps(anchored) + "\n")
    out = tmp / "out"
    p = lcab_module(tmp, "lcab.report.paper", str(store), "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    return rows(store), out


def _ok(raw):
    return [r for r in raw if r["status"] == "ok" and r["cell_id"] != "anchored"]


def test_every_anchor_is_listed_with_its_ratio(study):
    raw, out = study
    table = pd.read_csv(out / "anchors.csv")
    n_anchor_targets = sum(
        len(paper.PAPER_KERNELS.get(a.kernel, (a.kernel,))) if a.source == "paper" else 1
        for a in paper.anchors().itertuples()
    )
    assert len(table) == n_anchor_targets
    hit = table[(table["lcab kernel"] == "sdpa_cudnn") & (table["mask"] == "full") & (table["mode"] == "fwd")]
    want = next(r for r in raw if r["cell_id"] == "anchored")["metrics"]["tflops"]
    assert list(hit["lcab"]) == pytest.approx([want, want])  # the paper's cudnn row and the raw row
    assert list(hit["n_docs"]) == [7, 7]
    assert sorted(hit["ratio"]) == pytest.approx(sorted([want / 584.0, want / 610.0]))
    assert set(table[table["lcab kernel"] == "flash3"]["status"]) == {"not run"}


def test_mask_vs_full_only_for_native_masks(study):
    raw, out = study
    frame = pd.read_csv(out / "mask_vs_full.csv")
    full = {
        (r["config"]["kernel"]["name"], r["config"]["seqlen"]): r["metrics"]["tflops"]
        for r in _ok(raw)
        if r["config"]["mask"]["name"] == "full"
    }
    native = [
        r
        for r in _ok(raw)
        if r["config"]["mask"]["name"] != "full" and not r["metrics"].get("mask_form", "").startswith("dense")
    ]
    assert native, "the sweep has native causal cells"
    assert len(frame) == len(native)
    for r in native:
        k, s = r["config"]["kernel"]["name"], r["config"]["seqlen"]
        row = frame[
            (frame["kernel"] == k) & (frame["mask"] == r["config"]["mask"]["name"]) & (frame["S"] == s)
        ]
        assert float(row["fraction"].iloc[0]) == pytest.approx(r["metrics"]["tflops"] / full[(k, s)])
        assert (str(row["flag"].iloc[0]) == "below 0.5") == (  # an empty flag may read back as NaN
            r["metrics"]["tflops"] / full[(k, s)] < 0.5
        )
        # The tile bound is the recorded mask's, rebuilt from the row's own config.
        mask = build_mask(mask_config(r["config"]["mask"]), s)
        assert float(row["tile bound"].iloc[0]) == pytest.approx(tile_occupancy(mask, 128))
        assert float(row["of bound"].iloc[0]) == pytest.approx(
            r["metrics"]["tflops"] / full[(k, s)] / tile_occupancy(mask, 128)
        )


def test_which_kernel_is_the_fastest_over_the_band(study):
    raw, out = study
    frame = pd.read_csv(out / "which_kernel.csv")
    for mask in ("full", "causal", "share_question"):
        means = {}
        for r in _ok(raw):
            if r["config"]["mask"]["name"] == mask:
                means.setdefault(r["config"]["kernel"]["name"], []).append(r["metrics"]["tflops"])
        best = max((sum(v) / len(v), k) for k, v in means.items() if len(v) == 2)
        row = frame[(frame["mask"] == mask) & (frame["band"] == "up to 4K")]
        assert list(row["kernel"]) == [best[1]] and float(row["tflops"].iloc[0]) == pytest.approx(best[0])
