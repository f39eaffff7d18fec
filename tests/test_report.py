"""`python -m lcab.report` on a store written by real `python -m lcab.run` sweeps (CPU).

The module fixture runs two real sweeps into two stores:
  a/results.jsonl: sdpa_math, torch, sdpa_flash x causal, share_question x 256, 512
                   (sdpa_flash on share_question is a real `unsupported` row);
  b/results.jsonl: flash3 (a real `unavailable` row on CPU) and torch causal 256 again with
                   resume=false, so that cell appears twice: the newer row must win.
then renders the report once through the real CLI (with --compare a b) and the tests read it.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from lcab_cli import rows
from lcab_cli import run_module as lcab

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


FAST = ("bench.warmup=0", "bench.iters=2")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("report")
    a, b = tmp / "a" / "results.jsonl", tmp / "b" / "results.jsonl"
    p = lcab(
        tmp,
        "lcab.run",
        "-m",
        "kernel=sdpa_math,torch,sdpa_flash",
        "mask=causal,share_question",
        "seqlen=256,512",
        *FAST,
        f"store={a}",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    p = lcab(
        tmp,
        "lcab.run",
        "-m",
        "kernel=flash3,torch",
        "mask=causal",
        "seqlen=256",
        "resume=false",
        *FAST,
        f"store={b}",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp / "rep"
    # b's file is given first: finished_at, not the order of the arguments, decides the newest row.
    p = lcab(tmp, "lcab.report", str(b), str(tmp / "a"), "--out", str(out), "--compare", str(a), str(b))
    assert p.returncode == 0, p.stderr[-3000:]
    return {"tmp": tmp, "a": a, "b": b, "out": out, "stdout": p.stdout}


def newest_rows(*stores: Path) -> dict[str, dict]:
    """The test's own dedup: latest finished_at, then the later line of the later file."""
    best: dict[str, tuple] = {}
    for fi, store in enumerate(stores):
        for li, r in enumerate(rows(store)):
            key = (r["finished_at"], fi, li)
            if r["cell_id"] not in best or key > best[r["cell_id"]][0]:
                best[r["cell_id"]] = (key, r)
    return {cid: r for cid, (_, r) in best.items()}


def read_table(path: Path) -> dict[tuple[str, str], str]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        head = next(reader)
        return {(line[0], head[i]): line[i] for line in reader for i in range(1, len(head))}


def dict_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_real_rows_have_the_statuses_the_report_needs(sweep):
    got = rows(sweep["a"]) + rows(sweep["b"])
    status = {(r["config"]["kernel"]["name"], r["config"]["mask"]["name"]): r["status"] for r in got}
    assert status[("sdpa_flash", "share_question")] == "unsupported"
    assert status[("flash3", "causal")] == "unavailable"
    ids = [r["cell_id"] for r in got]
    assert len(ids) - len(set(ids)) == 1  # torch causal 256 ran twice


def test_every_table_and_figure_file_exists(sweep):
    out = sweep["out"]
    for name in ("index.html", "index.md", "compare.md", "compare.csv", "tables/cells.csv"):
        assert (out / name).stat().st_size > 0, name
    for mask in ("causal", "share_question"):
        assert (out / f"tables/kernels_fwd_bwd_{mask}.csv").exists()
        assert (out / f"tables/kernels_fwd_bwd_{mask}.md").exists()
    for stem in ("bars_fwd_bwd", "heatmap_fwd_bwd_512", "compare_fwd_bwd"):
        assert (out / f"figures/{stem}.png").read_bytes()[:8] == PNG_MAGIC, stem
        assert "<svg" in (out / f"figures/{stem}.svg").read_text()[:2000]
    index = (out / "index.md").read_text()
    # Every figure and table file is linked from the index; absent CP data is said, not hidden.
    for f in (out / "figures").glob("*.png"):
        if not f.name.startswith("compare"):
            assert f"figures/{f.name}" in index
    for f in (out / "tables").glob("kernels_*.csv"):
        assert f"tables/{f.name}" in index
    assert "no CP rows" in index and "Figures not drawn" in index
    assert "figure not drawn (cp_scaling)" in sweep["stdout"]


def test_table_cells_are_the_rows_exact_numbers_and_marks(sweep):
    newest = newest_rows(sweep["a"], sweep["b"])
    checked = 0
    for r in newest.values():
        c = r["config"]
        table = read_table(sweep["out"] / f"tables/kernels_fwd_bwd_{c['mask']['name']}.csv")
        cell = table[(c["kernel"]["name"], str(c["seqlen"]))]
        if r["status"] == "ok":
            assert float(cell) == r["metrics"]["tflops"]  # exact: the CSV keeps full precision
        else:
            assert cell == {"unsupported": "X", "unavailable": "-"}[r["status"]], (r["status"], cell)
        checked += 1
    assert checked == 13
    md = (sweep["out"] / "tables/kernels_fwd_bwd_share_question.md").read_text()
    assert re.search(r"\| sdpa_flash \| X \| X \|", md)
    md = (sweep["out"] / "tables/kernels_fwd_bwd_causal.md").read_text()
    assert re.search(r"\| flash3 \| - \|  \|", md)  # flash3 ran at 256 only: 512 is blank, not a mark


def test_dedup_keeps_the_newest_row(sweep):
    old = [r for r in rows(sweep["a"]) if r["config"]["kernel"]["name"] == "torch"]
    old = next(r for r in old if r["config"]["mask"]["name"] == "causal" and r["config"]["seqlen"] == 256)
    new = next(r for r in rows(sweep["b"]) if r["cell_id"] == old["cell_id"])
    assert new["finished_at"] >= old["finished_at"]
    assert new["metrics"]["tflops"] != old["metrics"]["tflops"]  # timing noise tells the two apart
    table = read_table(sweep["out"] / "tables/kernels_fwd_bwd_causal.csv")
    assert float(table[("torch", "256")]) == new["metrics"]["tflops"]
    cells = dict_rows(sweep["out"] / "tables/cells.csv")
    assert sum(c["cell_id"] == old["cell_id"] for c in cells) == 1
    assert "13 cells from 14 rows in 2 store(s)" in (sweep["out"] / "index.md").read_text()


def test_compare_has_a_b_and_ratio(sweep):
    a = {r["cell_id"]: r for r in rows(sweep["a"])}
    b = {r["cell_id"]: r for r in rows(sweep["b"])}
    got = dict_rows(sweep["out"] / "compare.csv")
    both = [g for g in got if g["B/A"]]
    assert len(both) == 1  # only torch causal 256 has a number in both stores
    cid = next(iter(set(a) & set(b)))
    assert float(both[0]["A"]) == a[cid]["metrics"]["tflops"]
    assert float(both[0]["B"]) == b[cid]["metrics"]["tflops"]
    assert float(both[0]["B/A"]) == pytest.approx(b[cid]["metrics"]["tflops"] / a[cid]["metrics"]["tflops"])
    flash3 = next(g for g in got if g["kernel"] == "flash3")
    assert (flash3["A"], flash3["B"]) == ("", "-")
    assert "B/A" in (sweep["out"] / "compare.md").read_text()


def test_reconstructed_command_recreates_the_same_cells(sweep):
    index = (sweep["out"] / "index.md").read_text()
    cmds = re.findall(r"^python -m lcab\.run .*$", index, flags=re.M)
    a_cmd = next(c for c in cmds if "/a/results.jsonl" in c)
    for part in ("kernel=sdpa_math,torch,sdpa_flash", "mask=causal,share_question", "seqlen=256,512"):
        assert part in a_cmd
    b_cmd = next(c for c in cmds if "/b/results.jsonl" in c)
    # Rerun b's command into a fresh store: the same cell ids come out.
    fresh = sweep["tmp"] / "again" / "results.jsonl"
    args = shlex.split(b_cmd)[3:]
    args = [f"store={fresh}" if a.startswith("store=") else a for a in args]
    p = lcab(sweep["tmp"], "lcab.run", *args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert {r["cell_id"] for r in rows(fresh)} == {r["cell_id"] for r in rows(sweep["b"])}


def test_environment_is_listed(sweep):
    r = rows(sweep["a"])[0]
    index = (sweep["out"] / "index.html").read_text()
    for key in ("device", "torch", "git_sha"):
        assert str(r["env"][key]) in index


def test_loader_skips_a_cut_off_line_and_takes_globs(sweep, tmp_path):
    from lcab.report.load import load

    store = tmp_path / "x" / "results.jsonl"
    store.parent.mkdir()
    store.write_text(sweep["a"].read_text() + '{"cell_id": "cut", "status": "o')
    df = load([str(tmp_path / "*" / "results.jsonl")])
    assert len(df) == 12 and "cut" not in set(df["cell_id"])


def test_html_loads_in_headless_chromium(sweep, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    index = (sweep["out"] / "index.html").resolve()
    common = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([*common, "--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    imgs = re.findall(r"<img [^>]*src=\"([^\"]+)\"", dom.stdout)
    expected = {f"figures/{p.name}" for p in (sweep["out"] / "figures").glob("*.png")}
    assert set(imgs) == expected and expected
    assert dom.stdout.count("<table>") >= 4
    shot = tmp_path / "shot.png"
    p = subprocess.run(
        [
            *common,
            f"--screenshot={shot}",
            "--window-size=1400,2000",
            "--enable-logging=stderr",
            "--v=0",
            index.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 20_000
    # Console errors (a broken image, a script error) are logged by Chromium as CONSOLE lines.
    assert not re.search(r"CONSOLE.*(Error|Failed to load)", p.stderr), p.stderr[-2000:]
    assert "ERR_FILE_NOT_FOUND" not in p.stderr


# --- CP figures ----------------------------------------------------------------------------
# Real CP rows may not exist yet, so CP rows are made here from copies of real single-device
# rows: the config gets cp.name/shard and world (seqlen = 256 tokens per GPU x world), and the
# metrics gain the per-rank lists a CP run records. The per-rank area is the exact causal area of
# each rank's query tokens (contiguous: rank r holds one chunk; zigzag: chunks r and 2W-1-r);
# compute time is proportional to it; exposed comm is a made-up share; tflops is the real row's
# value scaled down with world. One ring/contiguous cell becomes an `oom` row without metrics.


def causal_rank_area(seqlen: int, world: int, shard: str) -> list[int]:
    def rows_area(a: int, b: int) -> int:  # causal rows [a, b): row i sees i + 1 keys
        return (b * (b + 1) - a * (a + 1)) // 2

    if shard == "contiguous":
        c = seqlen // world
        return [rows_area(r * c, (r + 1) * c) for r in range(world)]
    c = seqlen // (2 * world)
    return [
        rows_area(r * c, (r + 1) * c) + rows_area((2 * world - 1 - r) * c, (2 * world - r) * c)
        for r in range(world)
    ]


def synthetic_cp_rows(real: list[dict]) -> list[dict]:
    base = next(r for r in real if r["status"] == "ok" and r["config"]["mask"]["name"] == "causal")
    out = []
    for name, shard, slowdown in (
        ("ulysses", "zigzag", 1.05),
        ("ring", "zigzag", 1.2),
        ("ring", "contiguous", 1.6),
    ):
        for world in (2, 4, 8):
            r = copy.deepcopy(base)
            c = r["config"]
            c["cp"].update(name=name, shard=shard)
            c["world"] = world
            c["seqlen"] = 256 * world
            r["cell_id"] = hashlib.sha1(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16]
            if (name, shard, world) == ("ring", "contiguous", 8):
                r.update(status="oom", reason="CUDA out of memory (synthetic)", metrics={})
                out.append(r)
                continue
            m = r["metrics"]
            area = causal_rank_area(c["seqlen"], world, shard)
            mean = sum(area) / world
            compute = [m["time_ms_p50"] * a / mean for a in area]
            comm = [0.1 * m["time_ms_p50"] * (1 + (rank % 2)) for rank in range(world)]
            m.update(
                rank_area=area,
                area_imbalance=max(area) / mean,
                rank_compute_ms=compute,
                rank_comm_exposed_ms=comm,
                rank_time_ms=[x + y for x, y in zip(compute, comm)],
                comm_bytes=[1 << 20] * world,
                tflops=m["tflops"] / (slowdown ** (world.bit_length() - 1)),
            )
            out.append(r)
    return out


def test_cp_figures_render_from_per_rank_rows(sweep, tmp_path):
    from lcab.report import render
    from lcab.report.figures import Figure

    cp = synthetic_cp_rows(rows(sweep["a"]))
    store = tmp_path / "cp" / "results.jsonl"
    store.parent.mkdir()
    store.write_text("".join(json.dumps(r) + "\n" for r in cp))
    rep = render([str(store), str(sweep["a"])], tmp_path / "rep")
    kinds = {f.kind for f in rep.figures if isinstance(f, Figure)}
    assert {"bars", "heatmap", "cp_scaling", "cp_ranks", "cp_area"} <= kinds
    for f in rep.figures:
        if isinstance(f, Figure):
            assert f.png.read_bytes()[:8] == PNG_MAGIC and f.svg.exists()
    table = read_table(tmp_path / "rep/tables/cp_fwd_bwd_causal_256.csv")
    for r in cp:
        strat = f"{r['config']['cp']['name']}/{r['config']['cp']['shard']}"
        cell = table[(strat, str(r["config"]["world"]))]
        if r["status"] == "oom":
            assert cell == "E"
        else:
            assert float(cell) == r["metrics"]["tflops"]
    index = (tmp_path / "rep/index.md").read_text()
    assert "Figures not drawn" not in index
    assert "cp_scaling_fwd_bwd" in index and "cp_area_fwd_bwd" in index


def test_same_cells_on_two_devices_are_both_kept(sweep, tmp_path):
    """The cell id hashes what is measured, not where: another device's rows are not duplicates.

    The second store is a copy of the real store `a` with env.device renamed (a stand-in for the
    same sweep run on another GPU).
    """
    from lcab.report import render

    other = tmp_path / "other" / "results.jsonl"
    other.parent.mkdir()
    moved = []
    for r in rows(sweep["a"]):
        r["env"]["device"] = "Other Device"
        moved.append(json.dumps(r) + "\n")
    other.write_text("".join(moved))
    rep = render([str(sweep["a"]), str(other)], tmp_path / "rep", seqlen=256)
    assert len(rep.rows) == 24
    names = sorted(p.name for p in (tmp_path / "rep/tables").glob("kernels_*causal*.csv"))
    assert len(names) == 2 and any("other_device" in n for n in names), names
    heatmaps = [f.name for f in rep.figures if getattr(f, "kind", "") == "heatmap" and hasattr(f, "png")]
    assert len(heatmaps) == 2 and all(n.startswith("heatmap_fwd_bwd_256_") for n in heatmaps), heatmaps


def test_cli_says_what_is_missing(tmp_path, capsys):
    from lcab.report.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "rep")])
    assert exc.value.code == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty"), "--out", str(tmp_path / "rep")])
    assert "no results store (*.jsonl) under" in capsys.readouterr().err


def test_real_cp_rows_fill_the_cp_table_and_figures(tmp_path):
    """A real CP sweep (ulysses and ring on 2 local gloo ranks) through the report."""
    from lcab.report import render
    from lcab.report.figures import Figure

    store = tmp_path / "cp" / "results.jsonl"
    p = lcab(
        tmp_path,
        "lcab.run",
        "-m",
        "kernel=sdpa_math",
        "cp=ulysses,ring",
        "mask=causal",
        "cluster.nproc=2",
        "seqlen=${lcab_per_gpu:128}",
        *FAST,
        f"store={store}",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = rows(store)
    assert [r["status"] for r in got] == ["ok", "ok"], [r["reason"] for r in got]
    rep = render([str(store)], tmp_path / "rep")
    table = read_table(tmp_path / "rep/tables/cp_fwd_bwd_causal_128.csv")
    for r in got:
        assert float(table[(f"{r['config']['cp']['name']}/zigzag", "2")]) == r["metrics"]["tflops"]
    drawn = {f.kind for f in rep.figures if isinstance(f, Figure)}
    assert {"cp_scaling", "cp_ranks", "cp_area"} <= drawn, [
        f for f in rep.figures if not isinstance(f, Figure)
    ]
    index = (tmp_path / "rep/index.md").read_text()
    assert "cp=ulysses,ring" in index and "cluster.nproc=2" in index
