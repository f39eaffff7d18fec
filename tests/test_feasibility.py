"""What cannot run is decided before it runs (issue 13, item 4): a backward that does not exist
on the device is `unsupported` before any forward, and a cell that cannot fit in the free memory
is `oom` before anything is allocated, with the estimate in its reason.

The runs that would not fit are capped with RLIMIT_AS, so that on a build without the check they
fail to allocate instead of waking the OS's OOM killer on a shared machine.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys

import pytest
import torch
from lcab_cli import clean_env, lcab_run, rows

from lcab import kernels
from lcab.harness import memory
from lcab.kernels.base import ShapeSpec
from lcab.masks.patterns.causal import causal

CAP = 4 * 2**30  # Python + torch + a small cell; none of the cells below


def _cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


def test_readme_sweep_on_cpu_is_unavailable_or_unsupported_without_computing(tmp_path):
    """The README's second Usage line on a CPU: sdpa_cudnn needs CUDA, CPU flex has no backward.
    Its forward alone at 8K materialises 4 GiB of scores, so a forward first would not fit."""
    store = tmp_path / "r.jsonl"
    p = lcab_run(
        tmp_path,
        "-m",
        "kernel=sdpa_cudnn,flex",
        "mask=causal,causal_doc",
        "seqlen=8k,16k,32k",
        f"store={store}",
        preexec_fn=_cap_address_space,
    )
    got = rows(store)
    assert len(got) == 12, p.stderr[-3000:]
    by_kernel = {
        k: {r["status"] for r in got if r["config"]["kernel"]["name"] == k} for k in ("sdpa_cudnn", "flex")
    }
    assert by_kernel == {"sdpa_cudnn": {"unavailable"}, "flex": {"unsupported"}}, p.stdout[-3000:]
    assert {r["reason"] for r in got if r["status"] == "unsupported"} == {"flex has no backward on cpu"}
    assert all(r["metrics"] == {} for r in got)  # nothing was measured, not even a forward


def test_cell_that_cannot_fit_is_oom_before_anything_is_allocated(tmp_path):
    """seqlen=1e9 (the inputs alone: TiBs) and a dense 64K kernel (its scores: hundreds of GiB)."""
    store = tmp_path / "r.jsonl"
    p = lcab_run(
        tmp_path,
        "-m",
        "kernel=torch",
        "seqlen=64k,1000000000",
        f"store={store}",
        preexec_fn=_cap_address_space,
    )
    got = {(r["config"]["kernel"]["name"], r["config"]["seqlen"]): r for r in rows(store)}
    assert len(got) == 2, p.stderr[-3000:]
    needs = re.compile(
        r"^needs ~([\d.]+) (GiB|TiB), ([\d.]+) GiB free \((ulimit -v|MemAvailable|cgroup memory.max)\)"
    )
    for key in got:
        assert got[key]["status"] == "oom", got[key]["reason"]
        assert needs.match(got[key]["reason"]), got[key]["reason"]
    assert "kernel 464 GiB" in got[("torch", 65536)]["reason"]  # 7 x 4 heads x 64K^2 x fp32, not the inputs
    assert "tensors 3.26 TiB" in got[("torch", 10**9)]["reason"]
    assert "[  E] torch none causal S=65536" in p.stdout


def test_emulated_cell_that_cannot_fit_is_oom_before_anything_is_allocated(tmp_path):
    """cp.emulate holds the whole sequence's step on one device: 1e9 tokens never fit."""
    store = tmp_path / "r.jsonl"
    args = ("cp=ring", "cp.emulate=4", "kernel=sdpa_math", "seqlen=1000000000", f"store={store}")
    p = lcab_run(tmp_path, *args, preexec_fn=_cap_address_space)
    (r,) = rows(store)
    assert r["status"] == "oom", (r["reason"], p.stderr[-2000:])
    assert r["reason"].startswith("needs ~") and "estimated, nothing allocated" in r["reason"]
    assert "tensors 3.26 TiB" in r["reason"]  # 1e9 tokens x (q, k, v, out, grads) of the small shape


def test_sdpa_64k_fits_by_the_estimate():
    """The check must not refuse what fits: the O(S) kernels at 64K need tens of MiB here."""
    spec = ShapeSpec(1, 4, 2, 32, torch.float32, torch.device("cpu"))
    mask = causal(None, 65536)
    sdpa = memory.estimate(kernels.create("sdpa"), mask, spec, "fwd_bwd", verify=False)
    eager = memory.estimate(kernels.create("torch"), mask, spec, "fwd_bwd", verify=False)
    assert sdpa.total < 2**30
    scores = 4 * 65536**2 * 4  # one [Hq, S, S] fp32 tensor, computed here independently
    assert eager.kernel >= 6 * scores  # the eager step keeps 6 of them at its peak (measured below)


def test_backward_capability_is_per_device():
    flex, eager = kernels.create("flex"), kernels.create("torch")
    assert not flex.has_backward("cpu") and flex.has_backward("cuda")
    assert eager.has_backward("cpu") and eager.has_backward("cuda")


# One process measures real cells: each kernel runs once small (its code pages and thread pools
# are then resident), then at S = 1.5K with the peak resident set reset just before the cell.
# MALLOC_MMAP_THRESHOLD_ makes every large buffer its own mapping, returned when freed, so the
# high-water mark is the cell's own peak.
_MEASURE = r"""
import json, sys
import torch
from lcab.compose import compose_config
from lcab.config import mask_config
from lcab.harness.shape import shape_spec
from lcab.pipeline import execute
from lcab.harness import memory
from lcab import kernels
from lcab.masks import build
from lcab.plan import plan_cell

def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

out = []
for args in json.loads(sys.argv[1]):
    for seqlen in ("256", "1536"):
        cell = plan_cell(compose_config(args + ["seqlen=" + seqlen, "bench.warmup=0", "bench.iters=1", "bench.device=cpu"]))
        c = cell.config
        kernel = kernels.create(c["kernel"]["name"])
        mask = build(mask_config(c["mask"]), c["seqlen"])
        fp = memory.estimate(kernel, mask, shape_spec(c, torch.device("cpu")), c["bench"]["mode"], c["bench"]["verify"])
        del mask
        open("/proc/self/clear_refs", "w").write("5")
        base = rss("VmRSS")
        result = execute(cell)
        assert result.status == "ok", result.reason
    out.append({"args": args, "estimate": fp.total, "peak": rss("VmHWM") - base})
print(json.dumps(out))
"""


def test_estimate_bounds_the_measured_peak_of_real_cells(tmp_path):
    cases = [
        ["kernel=torch"],  # eager fwd_bwd: scores materialised, dense mask
        ["kernel=sdpa", "mask=causal_doc"],  # CPU flash with a dense mask: O(S^2) bytes, not O(Hq S^2)
        ["kernel=flex", "bench.mode=fwd"],  # unfused on CPU: materialises
        ["kernel=sdpa_math", "bench.verify=true"],  # + the fp64 reference
    ]
    p = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps(cases)],
        cwd=tmp_path,
        env=clean_env(MALLOC_MMAP_THRESHOLD_="131072", PYTHONWARNINGS="ignore"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    for m in json.loads(p.stdout.splitlines()[-1]):
        # Never below what the cell took; at most 2x above it (and a few MiB of slack for
        # allocator rounding and Python objects at these small sizes).
        assert m["peak"] <= m["estimate"] <= 2 * m["peak"] + 8 * 2**20, m


@pytest.mark.parametrize(
    "nbytes,text", [(0.5 * 2**30, "0.5 GiB"), (3.58e12, "3.26 TiB"), (2**30 * 1000, "0.977 TiB")]
)
def test_sizes_keep_three_digits(nbytes, text):
    assert memory.size(nbytes) == text
