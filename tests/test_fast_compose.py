"""lcab's memoised sweep composition gives exactly Hydra's own per-job config."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.types import RunMode
from omegaconf import OmegaConf

from lcab.config import register_configs
from lcab.launch import fast_compose, resolvers

CONF = Path(__file__).resolve().parents[1] / "lcab" / "conf"

JOBS = [
    [
        "kernel=flex",
        "mask=causal_document",
        "seqlen=32k",
        "bench.mode=bwd",
        "+experiment=paper_kernels",
        "store=a.jsonl",
    ],
    [
        "kernel=flex",
        "mask=causal_document",
        "seqlen=1k",
        "bench.mode=fwd",
        "+experiment=paper_kernels",
        "store=a.jsonl",
    ],
    [
        "kernel=sdpa",
        "mask=full",
        "seqlen=48k",
        "bench.mode=fwd",
        "+experiment=paper_kernels",
        "store=a.jsonl",
    ],
    ["kernel=flex", "mask.window=64", "bench.verify=true", "bench.iters=7", "shape=small"],
    ["cp=usp", "cp.ulysses_degree=2", "cluster.nproc=4", "kernel.block_size=64"],
    ["seqlen=4096", "bench.budget_ms=12.5", "hydra.job.chdir=false"],
    ["+experiment=smoke", "~store"],  # a delete: Hydra's full path
    ["kernel=cudnn"],  # groups only: Hydra's full path
]


@pytest.fixture(scope="module")
def loader_and_master():
    register_configs()
    resolvers.register()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF)))
    master = loader.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
    return loader, master


def _plain(cfg):
    return OmegaConf.to_container(cfg, resolve=False)


@pytest.mark.parametrize("job", JOBS, ids=lambda j: " ".join(j)[:60])
def test_memoised_equals_hydra(loader_and_master, job):
    loader, master = loader_and_master
    want = fast_compose._full(loader, master, job)
    got = fast_compose.load_sweep_config(loader, master, job)
    again = fast_compose.load_sweep_config(loader, master, job)  # from the cache this time
    assert _plain(got) == _plain(want)
    assert _plain(again) == _plain(want)
    assert got is not again  # every job gets its own copy


def test_jobs_do_not_share_state(loader_and_master):
    loader, master = loader_and_master
    a = fast_compose.load_sweep_config(loader, master, ["kernel=flex", "seqlen=1k"])
    a.seqlen = "2k"
    b = fast_compose.load_sweep_config(loader, master, ["kernel=flex", "seqlen=4k"])
    c = fast_compose.load_sweep_config(loader, master, ["kernel=flex", "seqlen=1k"])
    assert (b.seqlen, c.seqlen) == ("4k", "1k")


def test_a_bad_value_fails_like_hydra(loader_and_master):
    loader, master = loader_and_master
    for load in (fast_compose._full, fast_compose.load_sweep_config):
        with pytest.raises(Exception, match=r"bench\.iters"):
            load(loader, master, ["kernel=flex", "bench.iters=many"])


def test_one_full_composition_per_group_choice(loader_and_master, monkeypatch):
    loader, master = loader_and_master
    calls = []
    full = fast_compose._full
    monkeypatch.setattr(fast_compose, "_full", lambda *a: calls.append(a[2]) or full(*a))
    loader.__dict__.pop("_lcab_compose_cache", None)
    for k in ("torch", "sdpa_math"):
        for s in (256, 512, 1024):
            for m in ("fwd", "bwd"):
                fast_compose.load_sweep_config(
                    loader, master, [f"kernel={k}", f"seqlen={s}", f"bench.mode={m}"]
                )
    assert calls == [["kernel=torch"], ["kernel=sdpa_math"]]
