"""A kernel is one .py in lcab/kernels/adapters plus one .yaml in lcab/conf/kernel: a copy of
sdpa_math under a new name, added to a copy of the package and nothing else changed, runs on one
device and verifies against the fp64 reference, serves as the step kernel of ring on 2 gloo
ranks (verified), and emulates a world of 2 exactly as the original does (same per-rank areas
and counted bytes)."""

from __future__ import annotations

import pytest
from lcab_cli import lcab_run, rows
from one_file import assert_emulates_like_the_original, tree_with_copied_option

NEW = "sdpa_math_copy"
FAST = ("bench.warmup=0", "bench.iters=1", "seqlen=256", "bench.device=cpu")


@pytest.fixture(scope="module")
def copied(tmp_path_factory):
    return tree_with_copied_option(
        tmp_path_factory.mktemp("pkg"), "kernels/adapters", "kernel", "sdpa_math", NEW
    )


def _one_ok_row(p, store):
    assert p.returncode == 0, p.stderr[-3000:]
    (r,) = rows(store)
    assert r["status"] == "ok", r["reason"]
    assert r["config"]["kernel"]["name"] == NEW
    return r


def test_copied_kernel_runs_and_verifies_on_one_device(tmp_path, copied):
    store = tmp_path / "r.jsonl"
    p = lcab_run(
        tmp_path,
        f"kernel={NEW}",
        "mask=causal_document",
        "bench.verify=true",
        f"store={store}",
        *FAST,
        env=copied,
    )
    r = _one_ok_row(p, store)
    assert r["metrics"]["verify_passed"] is True
    assert r["metrics"]["mask_form"] == "dense"


def test_copied_kernel_is_the_step_kernel_of_ring_on_two_gloo_ranks(tmp_path, copied):
    store = tmp_path / "r.jsonl"
    p = lcab_run(
        tmp_path,
        f"kernel={NEW}",
        "cp=ring",
        "cluster.nproc=2",
        "mask=causal_document",
        "bench.verify=true",
        f"store={store}",
        *FAST,
        env=copied,
    )
    r = _one_ok_row(p, store)
    assert r["config"]["cp"]["name"] == "ring"
    assert r["metrics"]["verify_passed"] is True


def test_copied_kernel_emulates_like_the_original(tmp_path, copied):
    args = ("cp=ring", "cp.emulate=2", "mask=causal", *FAST)
    keys = ("rank_area", "rank_bytes_sent_counted", "area")
    assert_emulates_like_the_original(tmp_path, copied, "kernel", NEW, "sdpa_math", args, 2, keys)
