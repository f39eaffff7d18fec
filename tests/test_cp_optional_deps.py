"""Optional packages stay optional: with Triton unimportable every CP strategy still runs (the
LSE merge falls back to the eager fp32 merge), as on a fresh install without the test extras."""

from __future__ import annotations

import os
import subprocess
import sys

from lcab_cli import ROOT, clean_env, lcab_run, rows


def _without_triton(tmp_path) -> dict:
    """An environment whose `import triton` raises ImportError (a stub package first on the path)."""
    stub = tmp_path / "no_triton" / "triton"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise ImportError("triton is blocked by this test")\n')
    return {"PYTHONPATH": os.pathsep.join((str(stub.parent), str(ROOT)))}


def test_ring_runs_without_triton(tmp_path):
    env = _without_triton(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", "import triton"], env=clean_env(**env), capture_output=True, text=True
    )
    assert probe.returncode != 0 and "blocked by this test" in probe.stderr  # the stub works
    store = tmp_path / "r.jsonl"
    p = lcab_run(
        tmp_path,
        "cp=ring",
        "cluster.nproc=2",
        "seqlen=512",
        "kernel=sdpa_math",
        "bench.iters=1",
        "bench.warmup=0",
        f"store={store}",
        env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    (r,) = rows(store)
    assert r["status"] == "ok", r["reason"]


def test_strategy_discovery_imports_no_optional_package():
    """Listing and loading every strategy touches neither triton, yunchang nor megatron."""
    code = (
        "import sys\n"
        "from lcab.cp import registry\n"
        "loaded = [registry.get(n).name for n in registry.names()]\n"
        "assert {'ring', 'ulysses', 'yunchang_usp', 'torch_ring'} <= set(loaded), loaded\n"
        "print(sorted(m for m in ('triton', 'yunchang', 'megatron') if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "[]"
