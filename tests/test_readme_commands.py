"""Every shell command in README.md's ```bash blocks works as written (issue 13, "Done means").

Each command (a `&&` chain counts as its steps) falls into exactly one class of CLASSES below,
which says what this CPU machine does with it: a command that can run here runs, at tiny sizes,
and must exit 0 with every cell recorded `ok` or clearly marked (`unsupported` / `unavailable`,
e.g. a GPU kernel on the CPU); a command that needs Slurm, many GPUs, a network or the whole
suite must at least get through its own argument parsing and compose its config. A README
command that fits no class fails here, so a new one cannot slip by untested.
"""

from __future__ import annotations

import functools
import math
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from lcab_cli import ROOT, clean_env, lcab_run, rows, run_module
from omegaconf import OmegaConf

from lcab.compose import CONF_DIR

README = ROOT / "README.md"
PYTHONS = ("python", "python3")
# A cell that ran, or one that says plainly why it cannot run here (the README's table marks).
MARKED = {"ok", "unsupported", "unavailable"}
# Appended to (or replacing the same key in) every command that runs here: one tiny timed call
# (shape=small is what shape=auto is on a CPU; it only shrinks the presets' paper shape).
TINY = {"seqlen": "256", "shape": "small", "bench.warmup": "0", "bench.iters": "1"}


@dataclass(frozen=True)
class Step:
    """One command of a README bash block, as a user would type it."""

    line: int  # README line where its block line starts
    text: str  # continuations joined, trailing comment dropped
    argv: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"L{self.line}:{' '.join(self.argv)[:60]}"


def _drop_comment(line: str) -> str:
    """A shell `#` comment starts a word outside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_steps(text: str) -> list[Step]:
    steps: list[Step] = []
    in_bash, pending, start = False, "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("```"):
            in_bash = raw.strip() == "```bash"
            continue
        if not in_bash:
            continue
        line = _drop_comment(raw)
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command, pending = (pending + line).strip(), ""
        for part in command.split(" && ") if command else []:
            steps.append(Step(start, part.strip(), tuple(shlex.split(part))))
    return steps


STEPS = readme_steps(README.read_text())


# --- what a command is -------------------------------------------------------------------------


def _module(step: Step) -> str | None:
    """`python -m MODULE ...` -> MODULE."""
    a = step.argv
    return a[2] if len(a) > 2 and a[0] in PYTHONS and a[1] == "-m" else None


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags and the overrides, each in the order given."""
    return [a for a in args if a.startswith("-")], [a for a in args if not a.startswith("-")]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _multirun(flags: list[str]) -> bool:
    return any(f in ("-m", "--multirun") for f in flags)


def _first_values(overrides: list[str]) -> list[str]:
    """One job of a sweep: each comma list cut to its first value."""
    out = []
    for text, o in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        out.append(
            f"{text.split('=', 1)[0]}={next(o.sweep_string_iterator())}" if o.is_sweep_override() else text
        )
    return out


def _cells(overrides: list[str]) -> int:
    """How many jobs Hydra's basic sweeper makes of these overrides (their Cartesian product)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    sizes = [len(list(o.sweep_string_iterator())) for o in parsed if o.is_sweep_override()]
    return math.prod(sizes)


def _compose(overrides: list[str]):
    """lcab's config for these overrides, as the Hydra app composes it (its resolvers included)."""
    from lcab.compose import compose_config
    from lcab.launch import resolvers  # the Hydra app registers them at import

    resolvers.register()
    return compose_config(overrides)


@functools.cache
def _cluster(overrides: tuple[str, ...]) -> str:
    """The `cluster` the command's first job composes to (a preset may choose it)."""
    return str(_compose(_first_values(list(overrides))).cluster.name)


def _is_lcab_run(step: Step) -> bool:
    return _module(step) == "lcab.run"


def _is_slurm(step: Step) -> bool:
    return _is_lcab_run(step) and _cluster(tuple(_split(list(step.argv[3:]))[1])) == "slurm"


# --- what this machine does with each class ----------------------------------------------------


def run_here(step: Step, tmp: Path, world: Path) -> None:
    """Runs with TINY sizes into a fresh store; a preset's own sweep axes that the command does not
    set are cut to their first value (a command-line value replaces a preset's list)."""
    args = list(step.argv[3:])
    flags, overrides = _split(args)
    tiny = dict(TINY)
    args = [
        f"{a.split('=', 1)[0]}={tiny.pop(_key(a))}" if not a.startswith("-") and _key(a) in tiny else a
        for a in args
    ]
    extra = [f"{k}={v}" for k, v in tiny.items()]
    if _multirun(flags):
        given = {_key(o) for o in overrides} | set(TINY)
        for o in overrides:
            if o.startswith("+experiment="):
                preset = OmegaConf.load(CONF_DIR / "experiment" / f"{o.split('=', 1)[1]}.yaml")
                params = OmegaConf.select(preset, "hydra.sweeper.params") or {}
                extra += [f"{k}={str(v).split(',')[0]}" for k, v in params.items() if k not in given]
    store = tmp / "results.jsonl"
    extra += [f"store={store}", f"hydra.sweep.dir={tmp / 'sweep'}", f"hydra.run.dir={tmp / 'run'}"]
    p = lcab_run(tmp, *args, *extra, timeout=600)
    assert p.returncode == 0, f"{step.text}\n-> rc {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    want = _cells(_split(args)[1] + extra) if _multirun(flags) else 1
    got = rows(store)
    assert len(got) == want, f"{len(got)} rows for {want} cells:\n{p.stdout[-2000:]}"
    assert {r["status"] for r in got} <= MARKED, [(r["status"], r.get("reason")) for r in got]


def compose_slurm(step: Step, tmp: Path, world: Path) -> None:
    """`--cfg job --resolve` of the first job (flags where the README has them, `-m` dropped: Hydra
    composes a job, not a sweep), and every value of every sweep axis composes in process."""
    flags, overrides = _split(list(step.argv[3:]))
    p = lcab_run(
        tmp, *[f for f in flags if not _multirun([f])], "--cfg", "job", "--resolve", *_first_values(overrides)
    )
    assert p.returncode == 0, f"{step.text}\n{p.stderr[-3000:]}"
    assert OmegaConf.create(p.stdout).cluster.name == "slurm"
    parsed = OverridesParser.create().parse_overrides(overrides)
    axes = [
        [f"{t.split('=', 1)[0]}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [t]
        for t, o in zip(overrides, parsed)
    ]
    for i in range(max(len(a) for a in axes)):
        _compose([a[i % len(a)] for a in axes])


def compose_torchrun(step: Step, tmp: Path, world: Path) -> None:
    """torchrun's own parser takes the command; rank 0 of its world composes the first job."""
    from torch.distributed.run import get_args_parser

    targs = get_args_parser().parse_args(list(step.argv[1:]))
    assert targs.module and targs.training_script == "lcab.run"
    overrides = _split(list(targs.training_script_args))[1]
    env = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": str(targs.nproc_per_node),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    p = lcab_run(tmp, "--cfg", "job", "--resolve", *_first_values(overrides), env=env)
    assert p.returncode == 0, f"{step.text}\n{p.stderr[-3000:]}"
    assert OmegaConf.create(p.stdout).cluster.name == "torchrun"


def pip_dry_run(step: Step, tmp: Path, world: Path) -> None:
    """pip takes the command offline (no download: --no-index, --no-deps, --dry-run)."""
    extra = ["--dry-run", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    p = run_module(
        ROOT, "pip", *step.argv[1:], *extra, env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"}, timeout=300
    )
    assert p.returncode == 0, f"{step.text}\n{p.stderr[-3000:]}"


def ci_suite(step: Step, tmp: Path, world: Path) -> None:
    """The whole suite (this file included) is CI's job: .ci/run runs this very line. Here: pytest
    is installed and takes its flags."""
    assert step.text in (ROOT / ".ci" / "run").read_text().splitlines()
    p = run_module(ROOT, "pytest", *step.argv[3:], "--version", timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]


def run_gpu_script(step: Step, tmp: Path, world: Path) -> None:
    """Both passes of the script on the CPU: one mask, forward only, tiny sizes, its own folder."""
    over = ["mask=causal", "bench.mode=fwd", *(f"{k}={v}" for k, v in TINY.items())]
    p = subprocess.run(
        [*step.argv, *over],
        cwd=ROOT,
        env=clean_env(LCAB_PK_DIR=str(tmp)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0 and "exit 0" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    kernels = next(a for a in step.argv if a.startswith("kernel=")).split("=", 1)[1].split(",")
    for store in ("verify", "results"):
        got = rows(tmp / f"{store}.jsonl")
        assert len(got) == len(kernels) and {r["status"] for r in got} <= MARKED, (store, got)


def run_report(step: Step, tmp: Path, world: Path) -> None:
    """Verbatim, in a folder that holds a tiny sweep's rows where the README's paths point."""
    p = run_module(world, "lcab.report", *step.argv[3:], timeout=300)
    assert p.returncode == 0, f"{step.text}\n{p.stderr[-3000:]}"
    assert "index.html" in p.stdout


def run_predict(step: Step, tmp: Path, world: Path) -> None:
    """Verbatim in the checkout (the committed stores and calibration files it names)."""
    p = run_module(ROOT, "lcab.predict", *step.argv[3:], timeout=600)
    assert p.returncode == 0 and p.stdout.strip(), f"{step.text}\n{p.stderr[-3000:]}"


def wandb_sync_dry(step: Step, tmp: Path, world: Path) -> None:
    """Verbatim through bash (its `$(find ...)`), with `--dry-run`, over a tiny logger=wandb sweep
    at the README's path: it would upload each cell's run and the sweep's table run."""
    text = step.text.replace("wandb sync ", "wandb sync --dry-run ", 1)
    p = subprocess.run(
        ["bash", "-c", text], cwd=world, env=clean_env(), capture_output=True, text=True, timeout=300
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-2000:]
    assert f"Would sync {WANDB_CELLS + 1} run(s)" in out, out[-2000:]


@dataclass(frozen=True)
class Treatment:
    matches: Callable[[Step], bool]
    check: Callable[[Step, Path, Path], None]


# Checked in this order; the first class that matches treats the command.
CLASSES: dict[str, Treatment] = {
    "pip install": Treatment(lambda s: s.argv[:2] == ("pip", "install"), pip_dry_run),
    "the test suite": Treatment(lambda s: _module(s) == "pytest", ci_suite),
    "lcab.run on Slurm": Treatment(_is_slurm, compose_slurm),
    "lcab.run here": Treatment(_is_lcab_run, run_here),
    "torchrun lcab.run": Treatment(
        lambda s: s.argv[0] == "torchrun" and "lcab.run" in s.argv, compose_torchrun
    ),
    "GPU sweep script": Treatment(lambda s: s.argv[0] == "scripts/gpu_paper_kernels.sh", run_gpu_script),
    "lcab.report": Treatment(lambda s: _module(s) == "lcab.report", run_report),
    "lcab.predict": Treatment(lambda s: _module(s) == "lcab.predict", run_predict),
    "wandb sync": Treatment(lambda s: s.argv[:2] == ("wandb", "sync"), wandb_sync_dry),
}

# --- a folder laid out as the README's report and wandb commands expect ------------------------

WANDB_CELLS = 1


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A tiny logger=wandb sweep at the path the README's `wandb sync` line names, its rows
    under outputs/ and copied to runs/h100 and runs/h200 (the report lines' paths)."""
    root = tmp_path_factory.mktemp("readme_world")
    sync = next((s for s in STEPS if s.argv[:2] == ("wandb", "sync")), None)
    sweep = re.search(r"find (\S+)", sync.text).group(1) if sync else "outputs/sweeps/x"
    p = lcab_run(
        root,
        "-m",
        "kernel=sdpa_math",
        *(f"{k}={v}" for k, v in TINY.items()),
        "logger=wandb",
        f"hydra.sweep.dir={sweep}",
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(rows(root / sweep / "results.jsonl")) == WANDB_CELLS
    for name in ("h100", "h200"):
        (root / "runs" / name).mkdir(parents=True)
        shutil.copy2(root / sweep / "results.jsonl", root / "runs" / name / "results.jsonl")
    return root


def test_the_readme_has_commands_of_every_kind():
    assert len(STEPS) >= 20
    assert any(s.text == "python -m lcab.run" for s in STEPS)
    # `\` continuations are joined into one command; comments are gone.
    assert any("cluster.setup=" in s.text and s.argv[-1] == "seqlen=64k" for s in STEPS)
    assert not any("#" in a for s in STEPS for a in s.argv)


def test_every_class_in_the_table_is_used():
    used = {class_of(s) for s in STEPS}
    assert used == set(CLASSES)


def class_of(step: Step) -> str | None:
    return next((n for n, t in CLASSES.items() if t.matches(step)), None)


def test_a_command_of_no_known_kind_fits_no_class():
    for text in ("make bench", "python -m lcab.other", "docker run lcab", "torchrun train.py"):
        assert class_of(Step(0, text, tuple(shlex.split(text)))) is None, text


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS, ids=[s.id for s in STEPS])
def test_readme_command_works_as_written(step: Step, tmp_path: Path, request):
    name = class_of(step)
    assert name is not None, f"README line {step.line}: `{step.text}` fits no class of CLASSES"
    # Only the report and wandb lines need the prepared folder (a sweep of its own).
    world = request.getfixturevalue("world") if name in ("lcab.report", "wandb sync") else tmp_path
    CLASSES[name].check(step, tmp_path, world)
