"""The report's command per sweep comes from the Hydra overrides each row records (issue 14, item 5).

Real sweeps in a subprocess: every row, whatever its status, records its job's overrides; the
report's command, run again into a new store, gives exactly the sweep's cells. The rebuilding of
commands from rows (products, splits, quoting) is checked against Hydra's own sweep expansion.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from lcab_cli import lcab_run, rows, run_module

RUN = "python -m lcab.run"
FAST = ("bench.iters=1", "bench.warmup=0")


def _commands(store: Path) -> list[str]:
    from lcab.report.commands import sweep_commands
    from lcab.report.load import load

    return [c for s in sweep_commands(load([str(store)], dedup=False)) for c in s["commands"]]


def _rerun(cwd: Path, command: str, store: Path):
    """The report's command as a user runs it, with its rows sent to `store`."""
    args = shlex.split(command)
    assert args[:3] == RUN.split(), command
    args = [f"store={store}" if a.startswith("store=") else a for a in args[3:]]
    return lcab_run(cwd, *args)


def test_the_reports_command_reruns_exactly_the_sweeps_cells(tmp_path):
    store, again = tmp_path / "s.jsonl", tmp_path / "again.jsonl"
    typed = ["kernel=sdpa_math", "mask=causal,full", "seqlen=256,512", *FAST, f"store={store}"]
    p = lcab_run(tmp_path, "-m", *typed)
    assert p.returncode == 0, p.stderr[-3000:]
    got = rows(store)
    # Each row: its job's overrides (the sweep expanded in Hydra's order) and the sweep's as typed.
    jobs = [
        ["kernel=sdpa_math", f"mask={m}", f"seqlen={s}", *FAST, f"store={store}"]
        for m, s in itertools.product(("causal", "full"), ("256", "512"))
    ]
    assert [r["overrides"] for r in got] == jobs
    assert all(r["sweep_overrides"] == typed for r in got)
    p = run_module(tmp_path, "lcab.report", str(store), "--out", str(tmp_path / "rep"))
    assert p.returncode == 0, p.stderr[-3000:]
    cmds = re.findall(r"^python -m lcab\.run .*$", (tmp_path / "rep" / "index.md").read_text(), flags=re.M)
    assert cmds == [shlex.join([*RUN.split(), "-m", *typed])]
    p = _rerun(tmp_path, cmds[0], again)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(r["cell_id"] for r in rows(again)) == sorted(r["cell_id"] for r in got)


def test_error_and_invalid_rows_record_overrides_and_come_back(tmp_path):
    """An ok row, a preflight error (cp=none on 2 ranks) and two invalid configs (seqlen=0), from
    an experiment found through a search path whose sweeper lists the seqlens."""
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "tiny.yaml").write_text(
        "# @package _global_\nbench:\n  iters: 1\n  warmup: 0\n"
        "hydra:\n  sweeper:\n    params:\n      seqlen: 256,0\n"
    )
    store, again = tmp_path / "s.jsonl", tmp_path / "again.jsonl"
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    typed = ["kernel=sdpa_math", "+experiment=tiny", "cluster.nproc=1,2", f"store={store}"]
    p = lcab_run(tmp_path, "-m", search, *typed)
    assert p.returncode == 2, p.stderr[-3000:]  # a config was rejected
    got = rows(store)
    assert [(r["cell_id"] == "invalid-config", r["status"]) for r in got] == [
        (False, "ok"),
        (False, "error"),
        (True, "error"),
        (True, "error"),
    ]
    jobs = [
        [
            search,
            f"seqlen={s}",
            "kernel=sdpa_math",
            "+experiment=tiny",
            f"cluster.nproc={n}",
            f"store={store}",
        ]
        for s, n in itertools.product(("256", "0"), ("1", "2"))
    ]
    assert [r["overrides"] for r in got] == jobs
    assert all(r["sweep_overrides"] == [search, *typed] for r in got)
    cmds = _commands(store)
    assert cmds[1] == "# as typed: " + shlex.join([*RUN.split(), "-m", search, *typed])
    p = _rerun(tmp_path, cmds[0], again)
    assert p.returncode == 2, p.stderr[-3000:]
    redo = rows(again)
    assert [(r["cell_id"], r["status"]) for r in redo] == [(r["cell_id"], r["status"]) for r in got]


def _meaning(overrides: list[str]) -> frozenset[tuple[str, str]]:
    """Overrides as Hydra reads them: `seqlen=$\\{a\\}` (how a sweep writes a job's) is `seqlen=${a}`."""
    return frozenset(
        (o.get_key_element(), repr(o.value())) for o in OverridesParser.create().parse_overrides(overrides)
    )


def _expand(command: str) -> list[frozenset[tuple[str, str]]]:
    """The jobs Hydra's basic sweeper launches for a command (its `hydra.*` overrides on each)."""
    args = shlex.split(command)[3:]
    parsed = OverridesParser.create().parse_overrides([a for a in args if a != "-m"])
    hydra = [o.input_line for o in parsed if o.is_hydra_override()]
    batches = BasicSweeper.split_arguments([o for o in parsed if not o.is_hydra_override()], None)
    if "-m" not in args:
        assert not any(o.is_sweep_override() for o in parsed), command
    return [_meaning(hydra + job) for job in batches[0]]


def _store(tmp_path: Path, cells: list[list[str]], name: str) -> Path:
    from lcab.results.schema import Result

    path = tmp_path / f"{name}.jsonl"
    with open(path, "w") as f:
        for i, o in enumerate(cells):
            row = Result(cell_id=f"c{i}", status="ok", sweep="multirun/x", overrides=o)
            f.write(json.dumps(row.to_dict()) + "\n")
    return path


K = ("kernel=sdpa_math", "kernel=torch")
# Job overrides as Hydra records them (`store=a b.jsonl` typed is `store=a\\ b.jsonl` there).
CELLS = {
    "product": [[k, f"seqlen={s}", "store=a\\ b.jsonl"] for k in K for s in ("256", "512")],
    "diagonal": [[K[0], "seqlen=256"], [K[1], "seqlen=512"]],
    "l_shape": [[K[0], "seqlen=256"], [K[0], "seqlen=512"], [K[1], "seqlen=256"]],
    "key_in_some": [[K[0], "seqlen=256"], [K[0], "seqlen=512", "mask.window=64"], [K[1], "seqlen=512"]],
    "quoted": [
        ["seqlen=${lcab_per_gpu:8k}", "cp=ring", "+x=[1,2]", "~logger"],
        ["seqlen=${lcab_per_gpu:16k}", "cp=ring", "+x=[1,2]", "~logger"],
        ["seqlen=${lcab_per_gpu:8k}", "cp=ring", "+x=[3]", "~logger"],
        ["seqlen=${lcab_per_gpu:16k}", "cp=ring", "+x=[3]", "~logger"],
        ["seqlen='a,b'", "cp=ring", "+x=[3]", "~logger"],
    ],
    "one_cell": [["hydra.searchpath=[file:///x]", K[0], "seqlen=1k"]],
}


@pytest.mark.parametrize("name", CELLS)
def test_commands_cover_exactly_the_cells_by_hydras_expansion(tmp_path, name):
    cells = CELLS[name]
    cmds = _commands(_store(tmp_path, cells, name))
    jobs = [j for c in cmds for j in _expand(c)]
    assert len(jobs) == len(set(jobs)) == len(cells), cmds  # no cell twice, none missing
    assert set(jobs) == {_meaning(c) for c in cells}, cmds
    if name in ("product", "quoted", "one_cell"):
        assert len(cmds) == 1 + (name == "quoted"), cmds  # a product is one command


def test_rows_without_overrides_say_so(tmp_path):
    old = Path(__file__).resolve().parents[1] / "docs/results/h100/cudnn_32k.jsonl"
    assert _commands(old) == [
        "# command not recorded: 8 row(s) predate rows that record their Hydra overrides"
    ]
    mixed = _store(tmp_path, [[K[0], "seqlen=256"]], "mixed")
    with open(mixed, "a") as f:
        f.write(json.dumps({"cell_id": "old", "status": "ok", "sweep": "multirun/x"}) + "\n")
    assert _commands(mixed) == [
        f"{RUN} kernel=sdpa_math seqlen=256",
        "# command not recorded: 1 row(s) predate rows that record their Hydra overrides",
    ]
