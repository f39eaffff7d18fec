"""A strategy is one .py in lcab/cp/strategies plus one .yaml in lcab/conf/cp: a copy of
ring_allgather under a new name, added to a copy of the package and nothing else changed, runs
on 2 gloo ranks and verifies against the fp64 reference, and emulates a world of 4 exactly as
the original does (same per-rank areas and counted bytes)."""

from __future__ import annotations

import pytest
from lcab_cli import lcab_run, rows
from one_file import assert_emulates_like_the_original, tree_with_copied_option
from test_cp_cli import FAST

NEW = "gather_copy"


@pytest.fixture(scope="module")
def copied(tmp_path_factory):
    return tree_with_copied_option(
        tmp_path_factory.mktemp("pkg"), "cp/strategies", "cp", "ring_allgather", NEW
    )


def test_copied_strategy_runs_and_verifies_on_two_gloo_ranks(tmp_path, copied):
    store = tmp_path / "r.jsonl"
    p = lcab_run(
        tmp_path,
        f"cp={NEW}",
        "cluster.nproc=2",
        "mask=causal_document",
        "bench.verify=true",
        f"store={store}",
        *FAST,
        env=copied,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    (r,) = rows(store)
    assert r["status"] == "ok", r["reason"]
    assert r["config"]["cp"]["name"] == NEW
    assert r["metrics"]["verify_passed"] is True
    assert r["metrics"]["rank_calls"][0] == {"allgather_kv": 1.0, "reduce_scatter_dkv": 1.0}


def test_copied_strategy_emulates_like_the_original(tmp_path, copied):
    args = ("cp.emulate=4", "mask=causal", *FAST)
    keys = ("rank_area", "rank_bytes_sent_counted", "cp_degrees", "area")
    assert_emulates_like_the_original(tmp_path, copied, "cp", NEW, "ring_allgather", args, 4, keys)
