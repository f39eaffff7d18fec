"""Peers through lcab's harness: yunchang's USP against lcab's USP on the same inputs (gloo
pools, as in test_cp_matrix), their recorded limits, and PyTorch's context_parallel on CPU.

yunchang 0.6.4 on CPU runs its own groups, all-to-all, ring schedule and merge with lcab's step
kernel as the block kernel (it has no CPU kernel with an LSE). Its backward is right only for
bf16/fp16 and ring degree > 1 on gloo; those limits are recorded statuses, asserted here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from lcab.cp.selfcheck import case_config, check_cases
from lcab.results.store import read_rows

pytest.importorskip("yunchang")
ROOT = Path(__file__).resolve().parents[1]
DEGREES = {2: [(2, 1), (1, 2)], 4: [(2, 2)]}


def gathered_outputs(configs: list[dict]) -> list:
    """Per config: out (and grads) of the strategy in global token order, on rank 0."""
    from lcab.cp.tokens import gather_global, local_inputs
    from lcab.harness.inputs import make_inputs
    from lcab.harness.verify import kernel_outputs
    from lcab.pipeline.prepare import open_cell, prepare
    from lcab.plan import Cell

    res = []
    for c in configs:
        dev = torch.device("cpu")
        prep = prepare(Cell(c, "peer"), dev, dist.get_rank(), dist.get_world_size())
        run = open_cell(prep, c["cp"], dev)
        s = prep.shape
        L = prep.mask.seqlen_q
        glob = make_inputs(s.batch, L, L, s.heads_q, s.heads_kv, s.head_dim, s.dtype, dev, 0)

        def fn(q, k, v, prep=prep, run=run):
            return prep.strategy.attention(q, k, v, prep.plan, run), None

        got = kernel_outputs(fn, local_inputs(glob, prep.shard, dist.get_rank()), c["bench"]["mode"] != "fwd")
        res.append(gathered := gather_global(got, prep.shard, L))
        if gathered is not None:
            gathered["shard"] = prep.shard.name
    return res


def _cfg(cp: str, world: int, u: int, r: int, **kw) -> dict:
    return case_config(cp, world=world, heads=(8, 2), seqlen=128, ulysses_degree=u, ring_degree=r, **kw)


def _cases(world: int, **kw) -> list[tuple]:
    return [
        (u, r, m, sh)
        for u, r in DEGREES[world]
        for m in ("causal", "full")
        for sh in ("contiguous", "zigzag")
        if kw.get("ring_gt1") is None or (r > 1) == kw["ring_gt1"]
    ]


@pytest.mark.parametrize("world", [2, 4])
def test_yunchang_usp_matches_lcab_usp_forward_fp32(pools, world):
    """Same inputs, fp32 forward: both pass lcab's verify rule, and agree with each other
    to fp32 rounding (both merge in fp32)."""
    combos = _cases(world)
    cfgs = [
        _cfg(cp, world, u, r, mask=m, shard=sh, dtype="fp32", mode="fwd")
        for u, r, m, sh in combos
        for cp in ("yunchang_usp", "usp")
    ]
    checked = pools(world).run(check_cases, cfgs, timeout_s=600)
    outs = pools(world).run(gathered_outputs, cfgs, timeout_s=600)
    for i, (u, r, m, sh) in enumerate(combos):
        yc, ours = checked[2 * i], checked[2 * i + 1]
        assert "exception" not in yc and yc["passed"], (u, r, m, sh, yc)
        assert ours["passed"], (u, r, m, sh, ours)
        a, b = outs[2 * i]["out"], outs[2 * i + 1]["out"]
        assert (a - b).abs().max().item() <= 8 * torch.finfo(torch.float32).eps * b.abs().max().item()
        assert outs[2 * i]["shard"] == ("yunchang_basic" if sh == "contiguous" else "yunchang_zigzag")
        calls = yc["calls"][0]  # counted by wrapping yunchang's torch.distributed calls
        assert calls.get("a2a", 0) == (4 if u > 1 else 0) and calls.get("ring_p2p", 0) == r - 1


@pytest.mark.parametrize("world", [2, 4])
def test_yunchang_usp_matches_lcab_usp_fwd_bwd_bf16(pools, world):
    """bf16 (what yunchang targets), ring degree > 1: outputs and gradients of both pass the
    verify rule against fp64 on the same inputs, and they agree to bf16 rounding."""
    combos = _cases(world, ring_gt1=True)
    cfgs = [
        _cfg(cp, world, u, r, mask=m, shard=sh, dtype="bf16", mode="fwd_bwd")
        for u, r, m, sh in combos
        for cp in ("yunchang_usp", "usp")
    ]
    checked = pools(world).run(check_cases, cfgs, timeout_s=600)
    outs = pools(world).run(gathered_outputs, cfgs, timeout_s=600)
    for i, combo in enumerate(combos):
        yc, ours = checked[2 * i], checked[2 * i + 1]
        assert "exception" not in yc and yc["passed"], (combo, yc)
        assert ours["passed"], (combo, ours)
        for name in ("out", "dq", "dk", "dv"):
            a, b = outs[2 * i][name].float(), outs[2 * i + 1][name].float()
            assert (a - b).abs().max().item() <= 4 * 2**-8 * b.abs().max().item(), (combo, name)
        n_ring = combo[1]  # fwd R-1 + bwd (R-1 K/V + R dK/dV) exchanges, as lcab's ring
        assert yc["calls"][0]["ring_p2p"] == 3 * n_ring - 2


def test_yunchang_usp_recorded_limits(pools):
    cases = {
        "ring1_bwd": _cfg("yunchang_usp", 2, 2, 1, mask="causal", shard="contiguous", dtype="bf16"),
        "fp32_bwd": _cfg("yunchang_usp", 2, 1, 2, mask="causal", shard="contiguous", dtype="fp32"),
        "doc_mask": _cfg("yunchang_usp", 2, 1, 2, mask="causal_document", shard="contiguous", dtype="bf16"),
        "shard": _cfg("yunchang_usp", 2, 1, 2, mask="causal", shard="balanced", dtype="bf16"),
        "odd_len": {
            **_cfg("yunchang_usp", 2, 1, 2, mask="causal", shard="zigzag", dtype="bf16"),
            "seqlen": 130,
        },
        "math_ring": _cfg(
            "yunchang_usp",
            2,
            1,
            2,
            mask="causal",
            shard="contiguous",
            kernel="sdpa_math",
            mode="fwd",
            dtype="fp32",
        ),
        "math_fwd": _cfg(
            "yunchang_usp",
            2,
            2,
            1,
            mask="causal",
            shard="contiguous",
            kernel="sdpa_math",
            mode="fwd",
            dtype="fp32",
        ),
        "flash2": _cfg("yunchang_usp", 2, 1, 2, mask="causal", shard="zigzag", kernel="flash2", dtype="bf16"),
    }
    got = dict(zip(cases, pools(2).run(check_cases, list(cases.values()), timeout_s=600), strict=True))
    exc = {k: (v or {}).get("exception", "") for k, v in got.items()}
    assert exc["ring1_bwd"].startswith("Unsupported") and "gloo" in exc["ring1_bwd"]
    assert exc["fp32_bwd"].startswith("Unsupported") and "aliases" in exc["fp32_bwd"]
    assert "yunchang_usp takes only causal/full masks: causal_document" in exc["doc_mask"]
    assert exc["shard"].startswith("Unsupported") and "balanced" in exc["shard"]
    assert exc["odd_len"].startswith("Unsupported") and "divisible" in exc["odd_len"]
    assert exc["math_ring"].startswith("Unsupported") and "lse = 0" in exc["math_ring"]
    assert got["math_fwd"]["passed"], got["math_fwd"]  # yunchang's own TORCH_MATH, ring degree 1
    assert exc["flash2"].startswith("Unavailable"), exc["flash2"]


def layouts_match_yunchang(cases: list[tuple]) -> list:
    """lcab's yunchang layouts vs yunchang's own extract_local helpers on a token index."""
    from yunchang import EXTRACT_FUNC_DICT

    from lcab.cp.base import Degrees, Topology
    from lcab.cp.strategies.yunchang_usp import yunchang_groups, yunchang_layout

    rank, world = dist.get_rank(), dist.get_world_size()
    out = []
    for u, r, kind, seqlen in cases:
        yunchang_groups(u, r, True)  # yunchang's groups for this mesh
        topo = Topology(world, rank, Degrees(u, r))
        ours = torch.from_numpy(yunchang_layout(kind, seqlen, topo).index(rank))
        theirs = EXTRACT_FUNC_DICT[kind](torch.arange(seqlen)[None, :, None], rank, world, r, u).flatten()
        flags = [None] * world
        dist.all_gather_object(flags, bool(torch.equal(ours, theirs)))
        out.append(all(flags))
    return out


def test_layouts_are_yunchangs_own(pools):
    cases = [(2, 2, "basic", 64), (2, 2, "zigzag", 64), (1, 4, "zigzag", 32), (4, 1, "zigzag", 48)]
    assert pools(4).run(layouts_match_yunchang, cases) == [True] * 4


def test_torch_ring_on_cpu_is_unavailable_for_the_stated_reason(pools):
    from lcab.cp.strategies.torch_ring import CPU_REASON, probe

    # torch's own context_parallel on gloo/CPU, through the strategy's code path.
    causal = pools(2).run(probe, "cpu", 32, True)
    full = pools(2).run(probe, "cpu", 32, False)
    assert not causal["ok"] and causal["stage"] == "forward"
    assert "_scaled_dot_product_flash_attention_for_cpu" in causal["error"] and "sharding" in causal["error"]
    assert not full["ok"] and full["stage"] == "backward" and "_for_cpu_backward" in full["error"]
    (r,) = pools(2).run(check_cases, [case_config("torch_ring", kernel="sdpa", seqlen=128, dtype="fp32")])
    assert r["exception"] == f"Unavailable: {CPU_REASON}"


def test_cli_rows_for_yunchang_usp(tmp_path):
    """`python -m lcab.run cp=yunchang_usp`: an ok row with lcab's per-rank metrics, and
    mask=causal_doc recorded as unsupported with the reason."""
    store = tmp_path / "res.jsonl"
    args = [
        "-m",
        "cp=yunchang_usp",
        "cluster.nproc=2",
        "cp.ulysses_degree=1",
        "mask=causal,causal_doc",
        "kernel=sdpa",
        "shape.dtype=bf16",
        "seqlen=256",
        "bench.device=cpu",
        "bench.warmup=1",
        "bench.iters=3",
        "bench.verify=true",
        f"store={store}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, "-m", "lcab.run", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    rows = read_rows(store)
    ok, doc = sorted(rows, key=lambda r: r["config"]["mask"]["name"] != "causal")
    assert ok["status"] == "ok", ok["reason"]
    m = ok["metrics"]
    assert m["verify_passed"] is True and m["shard"] == "yunchang_basic"
    assert m["yunchang_attn"].startswith("lcab sdpa ") and m["yunchang_ring_impl"] == "basic"
    assert len(m["rank_time_ms_p50"]) == 2 and all(b > 0 for b in m["rank_bytes_sent"])
    assert all(c > 0 for c in m["rank_compute_ms"]) and m["rank_calls"][0]["ring_p2p"] == 4
    assert doc["status"] == "unsupported"
    assert "yunchang_usp takes only causal/full masks: causal_document" in doc["reason"]
