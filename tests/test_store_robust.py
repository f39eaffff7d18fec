"""The results store never loses a row and its readers never stop on a line that is not one
(issue 13, item 7): a fragment left by a killed writer, garbage, a line still being written;
and a store that cannot be written is refused before any cell runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from lcab_cli import lcab_run, rows

from lcab.results.schema import Result
from lcab.results.store import ResultStore, bad_lines, read_rows

FAST = ("kernel=sdpa_math", "bench.iters=1", "bench.warmup=0")
GARBAGE = [
    b"garbage\n",
    b"[1, 2]\n",
    b'{"cell_id": 5, "status": "ok"}\n',
    b'{"cell_id": "x"}\n',
    b"\xff\xfe\n",
]


def _killed_writer(path, text: str) -> None:
    """A real writer killed mid-row: it writes part of a line, then SIGKILL."""
    code = (
        "import os, signal, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)\n"
        "os.write(fd, sys.argv[2].encode())\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(path), text], timeout=60)
    assert p.returncode == -signal.SIGKILL


def test_a_row_after_a_killed_writers_fragment_is_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path)
    store.append(Result(cell_id="a", status="ok"))
    cut = json.dumps(Result(cell_id="lost", status="ok").to_dict())[:25]
    _killed_writer(path, cut)
    assert path.read_bytes().endswith(cut.encode())  # the fragment, no newline
    store.append(Result(cell_id="b", status="ok", metrics={"tflops": 1.5}))
    # Independent check on the bytes: the fragment is its own line and the new row is intact.
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == cut.encode() and json.loads(lines[2])["cell_id"] == "b"
    assert [r["cell_id"] for r in store.rows()] == ["a", "b"]
    assert store.statuses() == {"a": "ok", "b": "ok"} and store.done("b", rerun_failed=False)
    assert bad_lines(path) == 1


def test_every_reader_skips_garbage_and_a_line_being_written(tmp_path):
    from lcab.report.load import load

    path = tmp_path / "r.jsonl"
    store = ResultStore(path)
    store.append(Result(cell_id="a", status="ok", config={"kernel": {"name": "sdpa"}, "seqlen": 256}))
    with open(path, "ab") as f:
        f.writelines(GARBAGE)
    store.append(Result(cell_id="b", status="error", reason="boom"))
    with open(path, "ab") as f:
        f.write(b'{"cell_id": "c", "status": "o')  # a writer is mid-row right now
    want = ["a", "b"]
    assert [r["cell_id"] for r in read_rows(path)] == want
    assert [r["cell_id"] for r in rows(path)] == want  # the tests' reader
    assert [r["cell_id"] for r in store.rows()] == want
    assert list(store.latest()) == want
    assert store.statuses() == {"a": "ok", "b": "error"}
    assert sorted(load([path])["cell_id"]) == want  # the report's reader
    assert bad_lines(path) == len(GARBAGE)
    with open(path, "ab") as f:
        f.write(b'k"}\n')  # the writer finishes its row
    assert store.statuses() == {"a": "ok", "b": "error", "c": "ok"}
    assert [r["cell_id"] for r in rows(path)] == ["a", "b", "c"]


def _one_error_line(p: subprocess.CompletedProcess, store: str) -> None:
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("lcab: ")]
    assert len(lines) == 1 and f"store={store}" in lines[0], p.stderr[-3000:]
    assert "[ ok]" not in p.stdout and "p50=" not in p.stdout  # no cell was run only to be lost


def test_an_unwritable_store_is_refused_before_the_first_cell(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    p = lcab_run(tmp_path, *FAST, "seqlen=256", f"store={folder}", timeout=120)
    _one_error_line(p, str(folder))
    assert "is a directory" in p.stderr and os.listdir(folder) == []
    # A sweep stops at its first cell: no cell could be recorded.
    p = lcab_run(tmp_path, "-m", *FAST, "seqlen=256,512", "store=/proc/x/r.jsonl", timeout=120)
    _one_error_line(p, "/proc/x/r.jsonl")
    assert "cannot be written" in p.stderr


def test_unwritable_store_check_is_one_config_error(tmp_path):
    from lcab.config import ConfigError

    (tmp_path / "d").mkdir()
    a_file = tmp_path / "file"
    a_file.write_text("")
    for store, why in (
        (tmp_path / "d", "is a directory"),
        (a_file / "r.jsonl", "is a file, not a folder"),
        ("/proc/x/r.jsonl", "cannot be written"),
        ("/dev/null", "not a regular file"),
    ):
        with pytest.raises(ConfigError, match=rf"^store={store} .*{why}") as exc:
            ResultStore(store).check_writable()
        assert "\n" not in str(exc.value)
    ok = tmp_path / "new" / "sub" / "r.jsonl"
    ResultStore(ok).check_writable()  # creates its folder, writes nothing
    assert ok.exists() and ok.read_bytes() == b""


def test_a_real_sweep_after_a_fragment_and_its_summary_from_the_store(tmp_path):
    """A real sweep appends after a killed writer's fragment: its rows are all kept. The summary a
    sweep prints from its store (when its jobs ran elsewhere) reads past the odd lines."""
    from omegaconf import OmegaConf

    from lcab.progress import _rows_from_store

    sweep = str(tmp_path / "sweep")
    store = tmp_path / "r.jsonl"
    _killed_writer(store, '{"cell_id": "cut", "sta')
    p = lcab_run(tmp_path, "-m", *FAST, "seqlen=256,0", f"store={store}", f"hydra.sweep.dir={sweep}")
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    got = rows(store)
    assert [(r["cell_id"] == "invalid-config", r["status"]) for r in got] == [(False, "ok"), (True, "error")]
    assert got[0]["config"]["seqlen"] == 256 and "seqlen '0'" in got[1]["reason"]
    # A row that parses but is not one lcab wrote (no world, no times): shown by its id.
    odd = {"cell_id": "odd", "status": "ok", "sweep": sweep, "config": {"kernel": {"name": "x"}}}
    with open(store, "ab") as f:
        f.writelines(GARBAGE)
        f.write((json.dumps({**odd, "metrics": {"tflops": "fast"}}) + "\n").encode())
        f.write(b'{"cell_id": "c", "sta')
    cfg = OmegaConf.create({"store": str(store), "hydra": {"sweep": {"dir": sweep}}})
    summary = _rows_from_store(cfg)
    assert sorted(status for _, status, _ in summary) == ["error", "ok", "ok"], summary
    assert any(label == "odd" for label, _, _ in summary)
    assert any("seqlen '0'" in line for _, _, line in summary)
