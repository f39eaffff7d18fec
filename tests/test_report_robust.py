"""The report on what real stores hold (issue 13, items 8 and 10): an invalid-config row, a
fragment, garbage and odd rows never stop it; CPU ranks are not called GPUs; a strong-scaling
sweep is one strong-scaling plot; a folder is searched for every *.jsonl.

One real sweep (`-m seqlen=512,0`: one ok row, one invalid-config row) feeds every test. CP rows
are copies of its ok row relabelled as CP cells (cp name, world, seqlen), a stand-in for a CP sweep
that needs no gloo processes; the report only reads those fields.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import re
from pathlib import Path

import pytest
from lcab_cli import rows
from lcab_cli import run_module as lcab

FAST = ("kernel=sdpa_math", "bench.warmup=0", "bench.iters=1")
ODD_LINES = [
    b"garbage\n",
    b"[1, 2]\n",
    b"\xff\xfe\n",
    b'{"cell_id": "no-status"}\n',
    b'{"cell_id": "x", "status": "ok", "config": "not a dict"}\n',
]
# A row that parses but whose fields are nonsense: the report shows it, never stops on it.
ODD_ROW = {
    "cell_id": "odd",
    "status": "ok",
    "config": {"kernel": {"name": "sdpa"}, "seqlen": "abc", "world": "x", "cp": {"emulate": "y"}},
    "metrics": {"tflops": "fast"},
    "finished_at": 7,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report_robust")
    path = tmp / "s.jsonl"
    p = lcab(tmp, "lcab.run", "-m", *FAST, "seqlen=512,0", f"store={path}")
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    got = rows(path)
    assert [r["status"] for r in got] == ["ok", "error"] and got[1]["cell_id"] == "invalid-config"
    return path


def _cells_csv(out: Path) -> list[dict]:
    with open(out / "tables" / "cells.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_an_invalid_config_row_does_not_stop_the_report(store, tmp_path):
    """The issue's reproduction: `-m seqlen=512,0` then the report of that store."""
    from lcab.report import render

    rep = render([str(store)], tmp_path / "rep")
    assert sorted(rep.rows["status"]) == ["error", "ok"]
    # One sweep, rebuilt as one command that covers both cells, the invalid one included.
    assert len(rep.commands) == 1 and len(rep.commands[0]["commands"]) == 1, rep.commands
    assert "seqlen=512,0" in rep.commands[0]["commands"][0]


def test_report_reads_past_invalid_rows_fragments_and_garbage(store, tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    body = store.read_bytes() + b"".join(ODD_LINES) + (json.dumps(ODD_ROW) + "\n").encode()
    mixed.write_bytes(body + b'{"cell_id": "cut", "status": "o')  # a writer is mid-row
    out = tmp_path / "rep"
    p = lcab(tmp_path, "lcab.report", str(mixed), "--out", str(out))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert f"Skipped {len(ODD_LINES)} line(s) that are not result rows" in p.stdout
    good, invalid = rows(store)
    cells = {r["cell_id"]: r for r in _cells_csv(out)}
    assert set(cells) == {good["cell_id"], "invalid-config", "odd"}
    assert float(cells[good["cell_id"]]["tflops"]) == good["metrics"]["tflops"]
    index = (out / "index.md").read_text()
    assert f"| error | invalid config | {invalid['reason']} |" in index
    # Both cells of the sweep, the invalid one included, come back as its one command.
    assert re.search(r"python -m lcab\.run -m .*seqlen=512,0", index), index
    table = (out / "tables" / "kernels_fwd_bwd_causal.md").read_text()
    assert "| sdpa_math |" in table


def _cp_copy(base: dict, name: str, world: int, seqlen: int, tflops: float, **env) -> dict:
    r = copy.deepcopy(base)
    c = r["config"]
    c["cp"].update(name=name, shard="zigzag")
    c.update(world=world, seqlen=seqlen)
    c["cluster"]["nproc"] = world
    r["cell_id"] = hashlib.sha1(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16]
    r["metrics"]["tflops"] = tflops
    r["env"].update(env)
    return r


def _render(tmp_path: Path, rows_: list[dict]):
    from lcab.report import render

    path = tmp_path / "cp.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows_))
    return render([str(path)], tmp_path / "rep")


def _table(path: Path) -> dict[tuple[str, str], str]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        head = next(reader)
        return {(row[0], h): v for row in reader for h, v in zip(head[1:], row[1:], strict=True)}


def test_strong_scaling_is_one_plot_and_table_with_a_line_per_strategy(store, tmp_path):
    from lcab.report.figures import Figure

    base = rows(store)[0]
    strong = [
        _cp_copy(base, name, world, 512, 0.001 * k + world * 1e-4)
        for k, name in enumerate(("ring", "ulysses"), 1)
        for world in (2, 4)
    ]
    rep = _render(tmp_path, strong)
    figs = [f for f in rep.figures if isinstance(f, Figure) and f.kind == "cp_scaling"]
    assert len(figs) == 1, [f.name for f in figs]
    assert "strong scaling" in figs[0].title and "weak" not in figs[0].title
    assert "512 tokens in total" in figs[0].title
    svg = figs[0].svg.read_text()
    assert "ring/zigzag" in svg and "ulysses/zigzag" in svg
    cp = [t for t in rep.tables if t.kind == "cp"]
    assert len(cp) == 1 and list(cp[0].frame.columns) == [2, 4]
    table = _table(rep.table_files[cp[0].name][0])
    for r in strong:  # one row (line) per strategy, one column per world
        assert (
            float(table[(f"{r['config']['cp']['name']}/zigzag", str(r["config"]["world"]))])
            == (r["metrics"]["tflops"])
        )


def test_weak_scaling_is_still_weak_and_a_row_in_both_is_drawn_in_both(store, tmp_path):
    from lcab.report.figures import Figure

    base = rows(store)[0]
    # ring at worlds 2 and 4 with 256 tokens per rank (weak); ring at 2 and ulysses at 4 with
    # 512 tokens in total (strong): ring's world-2 cell belongs to both.
    cells = [
        _cp_copy(base, "ring", 2, 512, 0.002),
        _cp_copy(base, "ring", 4, 1024, 0.0019),
        _cp_copy(base, "ulysses", 4, 512, 0.0015),
    ]
    rep = _render(tmp_path, cells)
    titles = sorted(f.title for f in rep.figures if isinstance(f, Figure) and f.kind == "cp_scaling")
    assert len(titles) == 2, titles
    assert "strong scaling, 512 tokens in total" in titles[0]
    assert "weak scaling, 256 tokens per rank" in titles[1]
    names = {t.name for t in rep.tables if t.kind == "cp"}
    assert names == {"cp_fwd_bwd_causal_256", "cp_fwd_bwd_causal_strong_512"}, names


def test_cpu_ranks_are_ranks_and_cuda_ranks_are_gpus(store, tmp_path):
    from lcab.report.figures import Figure

    base = rows(store)[0]
    assert base["env"]["device_type"] == "cpu"
    cpu = [_cp_copy(base, "ring", w, 256 * w, 0.001) for w in (2, 4)]
    rep = _render(tmp_path / "cpu", cpu)
    index = (tmp_path / "cpu" / "rep" / "index.md").read_text()
    assert "GPU" not in index, [ln for ln in index.splitlines() if "GPU" in ln]
    svgs = [f.svg.read_text() for f in rep.figures if isinstance(f, Figure) and f.kind == "cp_scaling"]
    assert len(svgs) == 1 and "ranks (world size)" in svgs[0] and "GPU" not in svgs[0]
    cuda = [_cp_copy(base, "ring", w, 256 * w, 0.001, device_type="cuda", device="Some GPU") for w in (2, 4)]
    _render(tmp_path / "cuda", cuda)
    index = (tmp_path / "cuda" / "rep" / "index.md").read_text()
    assert "CP TFLOPs/s per GPU" in index and "| 2 GPUs | 4 GPUs |" in index


def test_a_folder_is_searched_for_every_jsonl(store, tmp_path):
    from lcab.report.load import find_stores, load

    good = rows(store)[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "verify.jsonl").write_text(json.dumps(good) + "\n")
    other = {**good, "cell_id": "other"}
    (tmp_path / "b" / "c" / "results.jsonl").write_text(json.dumps(other) + "\n")
    (tmp_path / "b" / "notes.txt").write_text("not a store\n")
    found = {p.relative_to(tmp_path).as_posix() for p in find_stores([tmp_path])}
    assert found == {"a/verify.jsonl", "b/c/results.jsonl"}
    assert sorted(load([tmp_path])["cell_id"]) == sorted([good["cell_id"], "other"])
