"""For the one-file tests: a copy of the installable tree (lcab and its Hydra sweeper plugin) with
exactly one option added as one .py and one .yaml, copies of an existing option under a new name."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from lcab_cli import ROOT, lcab_run, rows


def _added_files(original: Path, copy: Path) -> list[str]:
    """Files only in `copy`; asserts nothing else differs."""
    added: list[str] = []

    def walk(d: filecmp.dircmp, rel: str = "") -> None:
        added.extend(f"{rel}{n}" for n in d.right_only)
        assert not d.diff_files and not d.left_only, (rel, d.diff_files, d.left_only)
        for name, sub in d.subdirs.items():
            walk(sub, f"{rel}{name}/")

    walk(filecmp.dircmp(original, copy, ignore=["__pycache__"]))
    return sorted(added)


def tree_with_copied_option(tmp_path: Path, module_dir: str, group: str, original: str, new: str) -> dict:
    """lcab/<module_dir>/<new>.py and lcab/conf/<group>/<new>.yaml, copied from `original` with
    its name changed; returns the environment that runs lcab from the copy."""
    src = tmp_path / "src"
    pkg = src / "lcab"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "lcab", pkg, ignore=skip)
    shutil.copytree(ROOT / "hydra_plugins", src / "hydra_plugins", ignore=skip)
    py = (pkg / module_dir / f"{original}.py").read_text()
    yaml = (pkg / "conf" / group / f"{original}.yaml").read_text()
    assert f'name = "{original}"' in py and f"name: {original}" in yaml
    (pkg / module_dir / f"{new}.py").write_text(py.replace(f'name = "{original}"', f'name = "{new}"'))
    (pkg / "conf" / group / f"{new}.yaml").write_text(yaml.replace(f"name: {original}", f"name: {new}"))
    assert _added_files(ROOT / "lcab", pkg) == sorted([f"conf/{group}/{new}.yaml", f"{module_dir}/{new}.py"])
    assert _added_files(ROOT / "hydra_plugins", src / "hydra_plugins") == []
    return {"PYTHONPATH": str(src)}


def assert_emulates_like_the_original(
    tmp_path: Path, env: dict, group: str, new: str, original: str, args: tuple, world: int, keys: tuple
) -> None:
    """One sweep over {new, original} with `args` (a cp.emulate run): both ok, `world` ranks of
    compute, and the metrics in `keys` (per-rank areas, counted bytes, ...) exactly equal."""
    store = tmp_path / "r.jsonl"
    p = lcab_run(tmp_path, "-m", f"{group}={new},{original}", *args, f"store={store}", env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    got = {r["config"][group]["name"]: r for r in rows(store)}
    assert [got[n]["status"] for n in (new, original)] == ["ok", "ok"], got
    copy, orig = got[new]["metrics"], got[original]["metrics"]
    assert len(copy["rank_compute_ms"]) == world
    for key in keys:
        assert copy[key] == orig[key], key
