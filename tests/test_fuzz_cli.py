"""Every mistake gets one clear line (issue 13, items 6 and 9, and the fuzz of its Done means).

Two layers, both real Hydra:
- 160 seeded random configs (every invalid override below at least once, each on a random
  valid background, plus edge-but-valid ones) go the way one job of `python -m lcab.run -m`
  goes: the sweep's config loader, HydraConfig set for the job, then plan_cell and preflight. Hydra's own errors become lcab's line through the same
  function the entry point uses. In-process, because 160 interpreters would take minutes.
- The issue's commands and a few sweeps as real `python -m lcab.run` processes, started
  concurrently, each with a time limit: exit status, stderr lines, recorded rows.
Assertions everywhere: no traceback, no hang, no silent exit, one `lcab:` line per invalid
config that names what is wrong.
"""

from __future__ import annotations

import copy
import random
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lcab_cli import clean_env, rows

# --- layer 1: in-process fuzz over Hydra's loader ------------------------------------------

# (override(s), text the one line must contain). Each is invalid on any valid background.
INVALID: list[tuple[tuple[str, ...], str]] = [
    # sequence lengths
    (("seqlen=0",), "seqlen '0' must be positive"),
    (("seqlen=-1",), "seqlen"),
    (("seqlen=abc",), "seqlen 'abc'"),
    (("seqlen=4.5k",), "seqlen '4.5k'"),
    (("seqlen=1k1",), "seqlen '1k1'"),
    (("seqlen=''",), "seqlen ''"),
    (("seqlen=99999999999m",), "2^31"),
    (("seqlen=2048m",), "2^31"),
    (("seqlen=${oops}",), "oops"),
    (("seqlen=${lcab_per_gpu:-1}",), "seqlen '-1'"),
    (("seqlen=${lcab_per_gpu:abc}",), "seqlen 'abc'"),
    (("~seqlen",), "seqlen"),
    (("seqlen=[1,2]",), "seqlen"),
    (("seqlen=[",), "seqlen=["),
    # shapes
    (("shape.heads_q=-4",), "shape sizes must be positive"),
    (("shape.heads_q=3",), "heads_q 3 is not divisible by heads_kv 2"),
    (("shape.heads_q=${oops}",), "shape.heads_q"),
    (("shape.heads_q=abc",), "shape.heads_q"),
    (("shape.heads_kv=-2",), "shape sizes must be positive"),
    (("shape.head_dim=-1",), "shape sizes must be positive"),
    (("shape.batch=0",), "shape sizes must be positive"),
    (("shape.dtype=fp8",), "shape.dtype 'fp8'"),
    (("shape.preset=nope",), "shape.preset 'nope'"),
    (("shape=nope",), "shape=nope is not an option"),
    # bench
    (("bench.mode=fwdx",), "bench.mode 'fwdx'"),
    (("bench.iters=0",), "bench.iters must be >= 1"),
    (("bench.warmup=-1",), "bench.warmup >= 0"),
    (("bench.device=tpu",), "bench.device 'tpu'"),
    (("bench.min_iters=0",), "bench.min_iters"),
    (("bench.budget_ms=-1",), "bench.budget_ms"),
    (("bench.max_spread=-0.1",), "bench.max_spread"),
    (("bench.timeout_s=-5",), "bench.timeout_s"),
    (("bench.timeout_s=inf",), "bench.timeout_s"),
    (("bench.l2_flush_mb=-1",), "bench.l2_flush_mb"),
    (("bench.seed=-1",), "bench.seed"),
    (("bench.iters=abc",), "bench.iters"),
    (("bench.iters=1.5",), "bench.iters"),
    (("bench.verify=maybe",), "bench.verify"),
    (("bench=42",), "bench=42"),
    (("bench=nope",), "bench=nope is not an option"),
    (("bench.iterz=3",), "iterz"),
    # masks
    (("mask=nope",), "mask=nope is not an option"),
    (("mask=mask_schema",), "mask=mask_schema is not an option"),
    (("mask=sliding_window", "mask.window=0"), "mask.window"),
    (("mask=prefix_lm_causal", "mask.prefix=1.5"), "mask.prefix"),
    (("mask=block_causal_document", "mask.block=0"), "mask.block"),
    (("mask=block_causal_document", "mask.max_blocks_per_doc=0"), "mask.max_blocks_per_doc"),
    (("mask=block_sparse", "mask.sparse_block=0"), "mask.sparse_block"),
    (("mask=block_sparse", "mask.density=0"), "mask.density"),
    (("mask=block_sparse", "mask.density=1.5"), "mask.density"),
    (("mask=block_sparse", "mask.density=nan"), "mask.density"),
    (("mask=causal_document", "mask.doc_table=nope"), "mask.doc_table 'nope'"),
    (("mask=causal_document_long", "mask.long_doc_frac=2"), "mask.long_doc_frac"),
    (("mask=full_document", "mask.long_min=0"), "mask.long_min"),
    (("mask=share_question", "mask.long_max=10"), "mask.long_max"),
    (("mask=causal_doc", "mask.max_doc_frac=-1"), "mask.max_doc_frac"),
    (("mask=causal_doc", "mask.max_doc_frac=0"), "mask.max_doc_frac"),
    (("mask=full_doc", "mask.max_doc_frac=2"), "mask.max_doc_frac"),
    (("mask.seed=-3",), "mask.seed"),
    # one schema per pattern: another pattern's parameter is an unknown key
    (("mask=causal", "mask.window=5"), "Key 'window' not in 'MaskConfig'"),
    (("mask=sliding_window", "mask.doc_table=default"), "Key 'doc_table' not in 'WindowMaskConfig'"),
    (("mask=causal_doc", "mask.prefix=0.5"), "Key 'prefix' not in 'DocMaskConfig'"),
    # kernels and options
    (("kernel=nope",), "kernel=nope is not an option"),
    (("kernel=kernel_schema",), "kernel=kernel_schema is not an option"),
    (("kernel=[sdpa,flex]",), "kernel takes one option"),
    (("~kernel",), "kernel takes one option"),
    (("kernel=flex", "kernel.block_size=0"), "kernel.block_size"),
    (("kernel=flex", "kernel.compile=maybe"), "kernel.compile"),
    (("kernel=sdpa", "kernel.block_size=64"), "Key 'block_size' not in 'KernelConfig'"),  # flex's
    (("+experiment=nope",), "experiment=nope is not an option"),
    # context parallelism: divisibility, degrees, shards (all found before a process starts)
    (("cp=ulysses", "cluster.nproc=3"), "ulysses degree 3 does not divide 4 q heads"),
    (("cp=ulysses", "cp.emulate=3"), "ulysses degree 3 does not divide 4 q heads"),
    (("cp=usp", "cluster.nproc=4", "cp.ulysses_degree=3"), "ulysses degree 3"),
    (("cp=usp", "cluster.nproc=3"), "usp"),
    (("cp=double_ring", "cluster.nproc=4", "cp.windows=3"), "3 windows do not divide ring degree 4"),
    (("cp=cp_schema",), "cp=cp_schema is not an option"),
    (("cp=nope",), "cp=nope is not an option"),
    (("cp=ring", "cp.shard=nope"), "cp.shard 'nope'"),
    (("cp=ring", "cp.groups=nope"), "cp.groups 'nope'"),
    (("cp=ring", "cp.emulate=-1"), "cp.emulate"),
    (("cp=double_ring", "cp.windows=-1"), "cp.windows"),
    (("cp=ulysses", "cp.ulysses_degree=-2"), "cp.ulysses_degree"),
    # one schema per strategy: a degree the strategy does not read is an unknown key
    (("cp=ring", "cp.ulysses_degree=2"), "Key 'ulysses_degree' not in 'RingCPConfig'"),
    (("cp=ulysses", "cp.ring_degree=2"), "Key 'ring_degree' not in 'UlyssesCPConfig'"),
    (("cp=usp", "cp.windows=2"), "Key 'windows' not in 'UspCPConfig'"),
    (("cp=none", "cp.ring_degree=2"), "Key 'ring_degree' not in 'CPConfig'"),
    # processes
    (("cluster.nproc=0",), "cluster.nproc must be >= 1"),
    (("cp=ring", "cluster.nproc=-1"), "cluster.nproc must be >= 1"),
    (("cp=ring", "cluster.nproc=1000"), "cluster.nproc=1000"),
    (("cluster.nproc=2",), "cp=none runs on one process"),
    (("cluster.nproc=two",), "cluster.nproc"),
    (("cluster.backend=mpi",), "cluster.backend 'mpi'"),
    (("cluster=nope",), "cluster=nope is not an option"),
    # logger and anything else
    (("logger.mode=sometimes",), "logger.mode 'sometimes'"),
    (("logger=wandb", "logger.mode=online"), "wandb login"),
    (("logger=nope",), "logger=nope is not an option"),
    (("store=${oops}",), "store"),
    (("nokey=1",), "nokey"),
    (("hydra.nokey=1",), "nokey"),
]

# Edge-but-valid: each must plan and pass preflight.
VALID: list[tuple[str, ...]] = [
    ("seqlen=1",),
    ("seqlen=3", "mask=causal_doc"),
    ("seqlen=3", "mask=block_causal_document"),
    ("seqlen=2047m",),
    ("seqlen=1K",),
    ("seqlen=${lcab_per_gpu:1k}",),
    ("shape.heads_q=0",),
    ("shape.heads_q=8", "shape.heads_kv=8"),
    ("mask.max_doc_frac=1.0", "mask=causal_doc"),
    ("mask.density=1.0", "mask=block_sparse"),
    ("mask.prefix=0", "mask=prefix_lm_causal"),
    ("mask.window=1", "mask=sliding_window"),
    ("bench.warmup=0", "bench.iters=1"),
    ("bench.timeout_s=0",),
    ("cp=ring", "cluster.nproc=2"),
    ("cp=ulysses", "cluster.nproc=2"),
    ("cp=ulysses", "cluster.nproc=4"),
    ("cp=usp", "cluster.nproc=4"),
    ("cp=double_ring", "cluster.nproc=8"),
    ("cp=ring", "cp.emulate=8"),
    ("+experiment=smoke",),
]

# Valid on their own and independent of every entry above but the ones sharing a key. Plain
# values mostly: a sweep composes once per distinct set of group choices, and so does this test.
BACKGROUND: list[str] = [
    "kernel=sdpa_math",
    "kernel=torch",
    "bench.mode=fwd",
    "bench.mode=bwd",
    "bench.verify=true",
    "bench.l2_flush=false",
    "bench.warmup=2",
    "bench.l2_flush_mb=64",
    "mask.seed=7",
    "bench.seed=3",
    "store=r.jsonl",
    "resume=false",
    "logger.project=fuzz",
]

SEED = 13
N_CASES = 160


def _key(override: str) -> str:
    """The config key or group an override sets: `mask.max_doc_frac=-1` -> mask."""
    return override.lstrip("~+").split("=", 1)[0].split(".", 1)[0]


@dataclass(frozen=True)
class FuzzCase:
    overrides: tuple[str, ...]
    needle: str | None  # None: valid


def fuzz_cases() -> list[FuzzCase]:
    rng = random.Random(SEED)

    def background(taken: tuple[str, ...]) -> list[str]:
        keys = {_key(o) for o in taken}
        free = [b for b in BACKGROUND if _key(b) not in keys]
        picked: list[str] = []
        for b in rng.sample(free, rng.randint(0, 3)):
            if _key(b) not in {_key(p) for p in picked}:
                picked.append(b)
        return picked

    out = []
    for i in range(N_CASES):
        if i < len(INVALID):
            overrides, needle = INVALID[i]
        elif rng.random() < 0.5:
            overrides, needle = rng.choice(INVALID)
        else:
            overrides, needle = rng.choice(VALID), None
        bg = background(overrides)
        mixed = [*bg, *overrides] if rng.random() < 0.5 else [*overrides, *bg]
        out.append(FuzzCase(tuple(mixed), needle))
    return out


def _sweep_loader(loader):
    """The loader a sweep's jobs are composed with: lcab's memoising sweeper plugin where it is
    installed (as in `lcab.run -m`), else Hydra's own; both are Hydra's composition."""
    try:
        from hydra_plugins.lcab_sweeper._memo_loader import MemoisedLoader
    except ImportError:
        return loader
    return MemoisedLoader(loader)


@pytest.fixture(scope="module")
def job_loader(monkeypatch_module):
    """Hydra's loader as a multirun job sees it: lcab's schemas and resolvers, sweep composition."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from lcab.compose import CONF_DIR
    from lcab.config import register_configs
    from lcab.launch import resolvers

    register_configs()
    resolvers.register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        master = compose(config_name="config", overrides=[], return_hydra_config=True)
        yield _sweep_loader(GlobalHydra.instance().config_loader()), master
    HydraConfig.instance().cfg = None  # as run_job leaves it: later tests compose outside an app


@pytest.fixture(scope="module")
def monkeypatch_module(tmp_path_factory):
    """No W&B login and a throw-away W&B config dir for the whole module."""
    mp = pytest.MonkeyPatch()
    for k in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        mp.delenv(k, raising=False)
    mp.setenv("NETRC", str(tmp_path_factory.mktemp("netrc") / "none"))
    mp.setenv("WANDB_CONFIG_DIR", str(tmp_path_factory.mktemp("wandb")))
    yield mp
    mp.undo()


def outcome(loader, master, overrides: list[str]) -> tuple[str, str, int]:
    """('ok' | 'config' | 'crash', the one line, exit status) of one job, as lcab.run has it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    from lcab.config import ConfigError
    from lcab.errors import one_line
    from lcab.plan import plan_cell, preflight

    try:
        job = loader.load_sweep_config(master, overrides)
    except Exception as exc:  # what reaches lcab.errors.reported() from Hydra
        line, status = one_line(exc, overrides)
        return ("config" if status == 2 else "crash"), line, status
    HydraConfig.instance().set_config(job)
    task = copy.deepcopy(job)
    with read_write(task), open_dict(task):
        del task["hydra"]
    try:
        preflight(plan_cell(task))
    except ConfigError as exc:
        return "config", str(exc), 2
    except Exception as exc:  # would be an internal error in lcab.run: never for a config
        return "crash", f"{type(exc).__name__}: {exc}", 1
    return "ok", "", 0


def test_fuzz_configs_plan_or_fail_with_one_line(job_loader):
    loader, master = job_loader
    cases = fuzz_cases()
    assert len(cases) >= 100 and len({c.overrides for c in cases}) >= 100
    bad = []
    for case in cases:
        kind, line, status = outcome(loader, master, list(case.overrides))
        if case.needle is None:
            if kind != "ok":
                bad.append(f"{case.overrides}: valid, but {kind}: {line}")
        elif kind != "config" or status != 2:
            bad.append(f"{case.overrides}: expected a config error, got {kind} ({status}): {line}")
        elif "\n" in line or not line.strip() or case.needle not in line:
            bad.append(f"{case.overrides}: the line does not name '{case.needle}': {line!r}")
    assert not bad, "\n".join(bad)


def test_fuzz_generator_is_seeded():
    assert fuzz_cases() == fuzz_cases()


# --- layer 2: real processes -------------------------------------------------------------

FAST = {
    "kernel": "kernel=sdpa_math",
    "seqlen": "seqlen=256",
    "bench.warmup": "bench.warmup=0",
    "bench.iters": "bench.iters=1",
    "bench.l2_flush": "bench.l2_flush=false",
}
LIMIT_S = 150  # per process: a hang fails its case, it does not stall the suite


def _refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: connections are refused


@dataclass(frozen=True)
class Proc:
    args: tuple[str, ...]
    rc: int
    lines: tuple[str, ...] = ()  # one `lcab:` stderr line each, containing this text, and no others
    statuses: tuple[str, ...] | None = None  # the store's rows (sorted); None: no row can exist
    env: dict = field(default_factory=dict)
    no_workers: bool = False  # rejected before a cell started (no `[run ]` line on stderr)
    fast: bool = True  # add FAST's tiny sizes (the command line would override a batch file's)


NO_LOGIN = {"WANDB_MODE": "online", "WANDB_API_KEY": "", "NETRC": "/nonexistent/netrc"}
# One multirun, one job per entry: each file of a `fuzz` config group (written by the test,
# found through hydra.searchpath) holds one of the invalid commands as config.
# name -> (the file's body, what its one line says)
BATCH: dict[str, tuple[str, str]] = {
    "nproc_1000": (
        "defaults:\n  - override /cp: ring\ncluster:\n  nproc: 1000\n",
        "cluster.nproc=1000 is more than",
    ),
    "ulysses_3": (
        "defaults:\n  - override /cp: ulysses\ncluster:\n  nproc: 3\n",
        "ulysses degree 3 does not divide 4 q heads",
    ),
    "usp_degrees": (
        "defaults:\n  - override /cp: usp\ncp:\n  ulysses_degree: 3\ncluster:\n  nproc: 4\n",
        "ulysses degree 3",
    ),
    "double_ring_windows": (
        "defaults:\n  - override /cp: double_ring\ncp:\n  windows: 3\ncluster:\n  nproc: 4\n",
        "3 windows do not divide ring degree 4",
    ),
    "nproc_negative": (
        "defaults:\n  - override /cp: ring\ncluster:\n  nproc: -2\n",
        "cluster.nproc must be >= 1",
    ),
    "per_gpu_negative": ("seqlen: ${lcab_per_gpu:-1}\n", "seqlen '-1'"),
    "heads_interpolation": ("shape:\n  heads_q: ${oops}\n", "shape.heads_q"),
    "schema_option": (
        "defaults:\n  - override /kernel: kernel_schema\n",
        "kernel=kernel_schema is not an option",
    ),
    "absurd_doc_seqlen": (
        "defaults:\n  - override /mask: causal_document\nseqlen: 99999999999m\n",
        "2^31",
    ),
    "negative_doc_frac": (
        "defaults:\n  - override /mask: causal_doc\nmask:\n  max_doc_frac: -1\n",
        "max_doc_frac",
    ),
    "bench_values": ("bench:\n  iters: 0\n", "bench.iters must be >= 1"),
}
FUZZ_DIR = "{fuzz_dir}"  # replaced by the case's directory

PROCS: dict[str, Proc] = {
    # item 6: the commands, one sweep of the rest (all rejected before a worker starts)
    "nproc_zero": Proc(("cluster.nproc=0",), 2, ("cluster.nproc must be >= 1, got 0",), ("error",)),
    "batch": Proc(
        ("-m", f"+fuzz={','.join(BATCH)}", f"hydra.searchpath=[file://{FUZZ_DIR}]"),
        2,
        tuple(needle for _, needle in BATCH.values()),
        ("error",) * len(BATCH),
        no_workers=True,
        fast=False,
    ),
    "sweep_mixed": Proc(
        ("-m", "mask=causal_doc", "mask.max_doc_frac=-1,0.5", "seqlen=0,256"),
        2,
        ("mask.max_doc_frac", "mask.max_doc_frac", "seqlen '0'"),
        ("error", "error", "error", "ok"),
    ),
    "error_cell_single_run": Proc(("cp=ring",), 1, (), ("error",)),  # world 1: a cell error, exit 1
    "edge_valid_sweep": Proc(("-m", "seqlen=1,3", "mask=causal_doc,causal"), 0, (), ("ok",) * 4),
    # item 9: what Hydra rejects before a job exists, and W&B
    "deleted_seqlen": Proc(("~seqlen",), 2, ("seqlen",), ("error",)),
    "group_number": Proc(("bench=42",), 2, ("bench=42",)),
    "override_grammar": Proc(("seqlen=[",), 2, ("seqlen=[",)),
    "unknown_key": Proc(("bench.iterz=3",), 2, ("iterz",)),
    "wandb_no_login": Proc(("logger=wandb",), 2, ("wandb login",), ("error",), NO_LOGIN, no_workers=True),
    "wandb_unreachable": Proc(
        ("logger=wandb",),
        1,
        ("W&B run not written",),
        ("error",),
        {"WANDB_MODE": "online", "WANDB_API_KEY": "a" * 40, "WANDB_INIT_TIMEOUT": "2"},
    ),
}


def _command(proc: Proc, tmp: Path) -> list[str]:
    given = {a.lstrip("~+").split("=", 1)[0] for a in proc.args}
    fast = [v for k, v in FAST.items() if proc.fast and k not in given and _key(k) not in given]
    where = [f"store={tmp / 'r.jsonl'}", f"hydra.run.dir={tmp / 'run'}", f"hydra.sweep.dir={tmp / 'sweep'}"]
    args = [a.replace(FUZZ_DIR, str(tmp / "conf")) for a in proc.args]
    return [sys.executable, "-m", "lcab.run", *args, *fast, *where]


def _write_batch(tmp: Path) -> None:
    group = tmp / "conf" / "fuzz"
    group.mkdir(parents=True)
    for name, (body, _) in BATCH.items():
        (group / f"{name}.yaml").write_text(f"# @package _global_\n{body}")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess | None, Path]]:
    """Every PROCS command, three at a time; a process past LIMIT_S is killed (result None)."""
    refused = _refused_url()

    def run(name: str):
        proc, tmp = PROCS[name], tmp_path_factory.mktemp(name)
        _write_batch(tmp)
        env = clean_env(**{"WANDB_BASE_URL": refused, **proc.env})
        if env.get("WANDB_API_KEY") == "":
            del env["WANDB_API_KEY"]
        try:
            done = subprocess.run(
                _command(proc, tmp), cwd=tmp, env=env, capture_output=True, text=True, timeout=LIMIT_S
            )
        except subprocess.TimeoutExpired:
            done = None
        return name, (done, tmp)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, PROCS))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PROCS))
def test_real_process(finished, name):
    proc = PROCS[name]
    done, tmp = finished[name]
    assert done is not None, f"{name}: no exit within {LIMIT_S} s"
    err = done.stderr
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err, err[-3000:]
    assert done.returncode == proc.rc, f"rc {done.returncode}\n{done.stdout[-2000:]}\n{err[-3000:]}"
    said = [ln for ln in err.splitlines() if ln.startswith("lcab:")]
    unmatched = list(said)
    for needle in proc.lines:  # each expected line once, and no other
        hit = next((ln for ln in unmatched if needle in ln), None)
        assert hit is not None, (needle, said)
        unmatched.remove(hit)
    assert not unmatched, unmatched
    others = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("lcab:", "[run ]"))]
    assert not others, others  # nothing else on stderr: no warnings, no Hydra report
    if proc.no_workers:
        assert "[run ]" not in err
    got = rows(tmp / "r.jsonl")
    if proc.statuses is None:
        assert got == []
    else:
        assert sorted(r["status"] for r in got) == sorted(proc.statuses), [r.get("reason") for r in got]
    if done.returncode != 0:  # never a silent failure: the reason is on stderr or in a cell line
        assert said or "[ERR]" in done.stdout
    if proc.statuses:  # the last line says how many cells ended how, and where the rows are
        last = done.stdout.strip().splitlines()[-1]
        assert last.startswith(("lcab sweep:", "lcab run:")) and str(tmp / "r.jsonl") in last, last
        assert f"{len(proc.statuses)} cell" in last


@pytest.mark.slow
def test_ctrl_c_while_importing_is_one_line_and_exit_130(tmp_path):
    """SIGINT once Hydra is imported (torch is still importing, or later: the same answer)."""
    cmd = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "lcab.run",
        *FAST.values(),
        f"store={tmp_path / 'r.jsonl'}",
    ]
    p = subprocess.Popen(
        cmd, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = []
    assert p.stderr is not None
    for line in p.stderr:
        seen.append(line)
        if line.startswith("import time:") and line.rstrip().endswith("| hydra"):
            p.send_signal(signal.SIGINT)
            break
    try:
        _, rest = p.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail("no exit after SIGINT")
    err = [ln for ln in [*seen, *rest.splitlines(True)] if not ln.startswith("import time:")]
    assert p.returncode == 130, (p.returncode, err)
    assert not any("Traceback" in ln for ln in err), "".join(err)
    said = [ln for ln in err if ln.strip()]
    assert len(said) == 1 and said[0].startswith(("lcab:", "[INT]")), said
