"""lcab's sweeper plugin (hydra/sweeper=lcab, hydra_plugins/lcab_sweeper): each job's config is
exactly the one Hydra's own loader composes, override by override, and its jobs are the ones
Hydra's basic sweeper makes; a Hydra multirun through it runs with the basic launcher and with
submitit's (which pickles the loader into each job's process, as on Slurm)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from lcab_cli import clean_env, lcab_run, rows
from omegaconf import OmegaConf

from hydra_plugins.lcab_sweeper import lcab_sweeper
from hydra_plugins.lcab_sweeper._memo_loader import MemoisedLoader
from lcab.compose import CONF_DIR
from lcab.config import register_configs
from lcab.launch import resolvers

PAPER = ["+experiment=paper_kernels", "store=a.jsonl"]
JOBS = [
    ["kernel=flex", "mask=causal_document", "seqlen=32k", "bench.mode=bwd", *PAPER],
    ["kernel=flex", "mask=causal_document", "seqlen=1k", "bench.mode=fwd", *PAPER],
    ["kernel=sdpa", "mask=full", "seqlen=48k", "bench.mode=fwd", *PAPER],
    [
        "kernel=flex",
        "mask=sliding_window",
        "mask.window=64",
        "bench.verify=true",
        "bench.iters=7",
        "shape=small",
    ],
    ["cp=usp", "cp.ulysses_degree=2", "cluster.nproc=4", "kernel=flex", "kernel.block_size=64"],
    ["seqlen=4096", "bench.budget_ms=12.5", "hydra.job.chdir=false"],
    ["cluster=slurm", "cluster.nodes=2", "cluster.partition=gpu", "seqlen=2k"],  # submitit's conf
    ["seqlen=1k", "kernel=torch", "seqlen=2k"],  # a key twice: the last wins, as in Hydra
    ["seqlen='${oops}'", "mask=full"],  # an interpolation is text until resolved
    ["store=b.jsonl", "~store"],  # a delete after a value: order matters, Hydra's path
    ["~store", "seqlen=1k"],
    ["bench.iters=3", "bench={iters: 5}"],  # a dict after a value: 5 here, 3 in the other order
    ["bench={iters: 5}", "bench.iters=3"],
    ["+experiment=smoke", "~store"],
    ["kernel=cudnn"],  # groups only: Hydra's path
    ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "bench.iters=2"],
]
# Masters as the sweeper gets them: with hydra.* overrides of the command line, which every job
# composes with (here, keys left out of hydra.job.override_dirname).
MASTERS = {
    "plain": [],
    "hydra overrides": [
        "hydra.job.config.override_dirname.exclude_keys=[seqlen,store]",
        "hydra.verbose=true",
    ],
}


@pytest.fixture(scope="module")
def hydra_loader():
    """Hydra's own config loader for lcab's conf (the reference) and lcab's around it."""
    register_configs()
    resolvers.register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def _master(loader, name: str):
    return loader.load_configuration("config", overrides=MASTERS[name], run_mode=RunMode.MULTIRUN)


def _plain(cfg):
    return OmegaConf.to_container(cfg, resolve=False)


@pytest.mark.parametrize("master_name", list(MASTERS))
@pytest.mark.parametrize("job", JOBS, ids=lambda j: " ".join(j)[:60])
def test_each_job_is_hydras_composition(hydra_loader, master_name, job):
    master = _master(hydra_loader, master_name)
    memo = MemoisedLoader(hydra_loader)
    want = hydra_loader.load_sweep_config(master, list(job))
    got = memo.load_sweep_config(master, list(job))
    again = memo.load_sweep_config(master, list(job))  # from the cache this time
    assert _plain(got) == _plain(want)
    assert _plain(again) == _plain(want)
    assert got is not again  # every job gets its own copy
    assert OmegaConf.is_struct(got) and not OmegaConf.is_readonly(got.hydra)


def test_the_override_dirname_leaves_out_the_excluded_keys(hydra_loader):
    """Not vacuous: the masters above differ in what the dirname holds."""
    job = ["kernel=flex", "seqlen=1k", "bench.iters=3"]
    names = {
        m: MemoisedLoader(hydra_loader).load_sweep_config(_master(hydra_loader, m), job) for m in MASTERS
    }
    assert names["plain"].hydra.job.override_dirname == "bench.iters=3,kernel=flex,seqlen=1k"
    assert names["hydra overrides"].hydra.job.override_dirname == "bench.iters=3,kernel=flex"


def test_jobs_do_not_share_state(hydra_loader):
    master, memo = _master(hydra_loader, "plain"), MemoisedLoader(hydra_loader)
    a = memo.load_sweep_config(master, ["kernel=flex", "seqlen=1k"])
    a.seqlen = "2k"
    b = memo.load_sweep_config(master, ["kernel=flex", "seqlen=4k"])
    c = memo.load_sweep_config(master, ["kernel=flex", "seqlen=1k"])
    assert (b.seqlen, c.seqlen) == ("4k", "1k")
    assert list(c.hydra.overrides.task) == ["kernel=flex", "seqlen=1k"]


@pytest.mark.parametrize("bad", ["bench.iters=many", "bench.nope=1", "kernel.block_size=[1]", "mask=nope"])
def test_a_bad_job_fails_with_hydras_own_error(hydra_loader, bad):
    master = _master(hydra_loader, "plain")
    job = ["kernel=flex", "seqlen=1k", bad]
    with pytest.raises(Exception) as want:
        hydra_loader.load_sweep_config(master, job)
    with pytest.raises(Exception) as got:
        MemoisedLoader(hydra_loader).load_sweep_config(master, job)
    assert (type(got.value), str(got.value)) == (type(want.value), str(want.value))


class CountingLoader(MemoisedLoader):
    """Hydra's loader, counting its full compositions (the overrides of each)."""

    def __init__(self, loader) -> None:
        super().__init__(loader)
        self.calls: list[list[str]] = []

    def load_sweep_config(self, master_config, sweep_overrides):
        self.calls.append(list(sweep_overrides))
        return self.loader.load_sweep_config(master_config, sweep_overrides)


def test_one_full_composition_per_group_choice(hydra_loader):
    spy = CountingLoader(hydra_loader)
    memo = MemoisedLoader(spy)
    master = _master(hydra_loader, "plain")
    for _validate_then_launch in range(2):
        for k in ("torch", "sdpa_math"):
            for s in (256, 512, 1024):
                for m in ("fwd", "bwd"):
                    memo.load_sweep_config(master, [f"kernel={k}", f"seqlen={s}", f"bench.mode={m}"])
    assert spy.calls == [["kernel=torch"], ["kernel=sdpa_math"]]


def test_pickled_without_its_cache_and_composes_the_same(hydra_loader):
    """submitit pickles the launcher, and so this loader, into every job of a Slurm sweep."""
    master, memo = _master(hydra_loader, "plain"), MemoisedLoader(hydra_loader)
    job = ["cluster=slurm", "seqlen=1k", "cluster.nodes=3"]
    want = memo.load_sweep_config(master, job)
    sent = pickle.dumps(memo)
    assert len(sent) == len(pickle.dumps(MemoisedLoader(hydra_loader)))  # no cached configs in it
    again = pickle.loads(sent)
    assert _plain(again.load_sweep_config(master, job)) == _plain(want)


@pytest.mark.parametrize(
    "args",
    [
        ["kernel=flex,sdpa", "seqlen=1k,2k,4k", "bench.mode=fwd"],
        ["seqlen=1k", "seqlen=2k,4k", "kernel=flex,torch", "mask=glob(causal*)"],
        ["seqlen=range(1,4)", "cp=ring"],
        [],
    ],
)
def test_the_jobs_are_the_basic_sweepers(hydra_loader, args):
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the reference only

    parsed = OverridesParser.create(config_loader=hydra_loader).parse_overrides(args)
    (want,) = BasicSweeper.split_arguments(parsed, None)
    assert lcab_sweeper.jobs(parsed) == want


def test_lcab_is_the_sweeper_and_cluster_slurm_keeps_submitit(hydra_loader):
    cfg = compose(config_name="config", overrides=["cluster=slurm"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.lcab_sweeper.lcab_sweeper.LcabSweeper"
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    local = compose(config_name="config", overrides=[], return_hydra_config=True)
    assert local.hydra.launcher._target_.endswith("BasicLauncher")


TINY = ["kernel=sdpa_math", "bench.warmup=0", "bench.iters=1", "bench.l2_flush=false"]


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_a_sweep_runs_through_the_sweeper(tmp_path, launcher):
    """Real processes: lcab.run -m in batches of one job (job numbers go on across batches),
    every row with its job's values; submitit_local runs each job in a fresh process from the
    pickled launcher and loader, as submitit_slurm does on a cluster."""
    store = tmp_path / "r.jsonl"
    p = lcab_run(
        tmp_path,
        "-m",
        f"hydra/launcher={launcher}",
        "seqlen=256,512",
        *TINY,
        f"store={store}",
        "hydra.sweep.dir=sweep",
        "hydra.sweeper.max_batch_size=1",
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = sorted((r["config"]["seqlen"], r["status"]) for r in rows(store))
    assert got == [(256, "ok"), (512, "ok")], p.stderr[-2000:]
    assert sorted(d.name for d in (tmp_path / "sweep").iterdir() if d.name.isdigit()) == ["0", "1"]
    submitted = list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))
    assert len(submitted) == (2 if launcher == "submitit_local" else 0)


def test_the_plugin_needs_no_lcab_import():
    """Hydra imports every plugin module whenever it starts (any app in this environment):
    the plugin must stay cheap, no torch and no lcab."""
    code = (
        "import sys, hydra_plugins.lcab_sweeper.lcab_sweeper; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lcab')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
