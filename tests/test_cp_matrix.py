"""Every strategy x shard x mask x world against the fp64 reference, in real gloo process groups.

One pool of worker processes per world size serves every case of this module (start-up is
paid once); a batch of cases is one pool task, and a case that raises reports its message.
"""

from __future__ import annotations

import pytest

from lcab.cp.selfcheck import case_config, check_cases

MASKS = [
    "full",
    "causal",
    "causal_document",
    "sliding_window_causal",
    "share_question",
    "prefix_lm_causal",
    "block_sparse",
]
SHARDS = ["contiguous", "zigzag", "doc_zigzag", "balanced"]
# Odd lengths: chunk sizes and documents not divisible by the degree (split + trailing pad).
SEQLEN = {2: 131, 4: 131, 8: 67}


def _run(pools, world: int, cases: list[dict]) -> list:
    return pools(world).run(check_cases, cases, timeout_s=600)


def _failures(cases, results) -> list[str]:
    bad = []
    for c, r in zip(cases, results, strict=True):
        tag = f"{c['cp']['name']}/{c['cp']['shard']}/{c['mask']['name']}/{c['kernel']['name']}"
        if r is None or "exception" in r:
            bad.append(f"{tag}: {r and r['exception']}")
        elif not r["passed"]:
            bad.append(f"{tag}: {r['failures']}")
    return bad


# Ordered by world so the module's pool restarts only when the world changes.
MATRIX = [(w, s) for w in (2, 4) for s in ("ring", "ulysses", "ring_allgather", "usp", "double_ring")]
MATRIX += [(8, s) for s in ("ring", "usp", "double_ring")]  # world 8 on a small shape


@pytest.mark.parametrize(("world", "strategy"), MATRIX)
def test_matrix_matches_reference(pools, strategy, world):
    cases = [
        case_config(strategy, mask=m, seqlen=SEQLEN[world], shard=sh, world=world, heads=(8, 2), dtype="fp32")
        for sh in SHARDS
        for m in MASKS
    ]
    results = _run(pools, world, cases)
    assert not _failures(cases, results)
    if strategy == "ulysses" and world == 4:
        assert all(r["kv_replicas"] == 2 for r in results)  # 2 kv heads < degree 4: replicated
    if world > 2 or strategy != "usp":
        assert any(r["pad_tokens"] > 0 for r in results)  # odd lengths were padded, and it is recorded


@pytest.mark.parametrize("kernel", ["sdpa", "sdpa_math"])
def test_sdpa_step_kernels_under_ring_and_usp(pools, kernel):
    cases = [
        case_config(
            cp, mask=m, seqlen=131, shard="zigzag", world=4, heads=(8, 2), dtype="fp32", kernel=kernel
        )
        for cp in ("ring", "usp", "double_ring", "ring_allgather")
        for m in ("causal", "causal_document", "block_sparse")
    ]
    assert not _failures(cases, _run(pools, 4, cases))


def test_counted_collectives_match_each_algorithm(pools):
    w = 4
    names = ["ring", "ring_allgather", "ulysses", "usp", "double_ring"]
    cases = [case_config(n, mask="causal", seqlen=128, world=w, heads=(8, 4), dtype="fp32") for n in names]
    res = dict(zip(names, _run(pools, w, cases), strict=True))
    for r in res.values():
        assert r["passed"], r
    for calls in res["ring"]["calls"]:  # W-1 K/V hops forward, W-1 + W dK/dV hops backward
        assert calls == {"ring_kv": w - 1, "ring_kv_bwd": w - 1, "ring_dkv": w}
    for calls in res["ring_allgather"]["calls"]:
        assert calls == {"allgather_kv": 1, "reduce_scatter_dkv": 1}
    for calls in res["ulysses"]["calls"]:
        assert sum(v for k, v in calls.items() if k.startswith("a2a") and not k.endswith("_bwd")) == 4
        assert sum(v for k, v in calls.items() if k.endswith("_bwd")) == 4
    for calls in res["usp"]["calls"]:  # ulysses 2 x ring 2
        assert calls["ring_kv"] == 1 and calls["ring_dkv"] == 2 and calls["a2a_q"] == 1
    for calls in res["double_ring"]["calls"]:  # 2 windows of 2: 2 inner hops + 1 outer = W-1
        assert calls["inner_kv"] + calls["outer_kv"] == w - 1 and calls["outer_kv"] == 1


def test_usp_mesh_order_and_explicit_degrees(pools):
    cases = [
        case_config(
            "usp",
            mask="causal_document",
            seqlen=131,
            world=4,
            heads=(8, 2),
            dtype="fp32",
            ulysses_degree=u,
            ulysses_intra_node=intra,
        )
        for u in (2, 4)
        for intra in (True, False)
    ]
    cases.append(
        case_config(
            "double_ring", mask="causal", seqlen=131, world=4, heads=(8, 2), dtype="fp32", ulysses_degree=2
        )
    )
    results = _run(pools, 4, cases)
    assert not _failures(cases, results)
    assert [r["degrees"][:2] for r in results[:4]] == [(2, 2), (2, 2), (4, 1), (4, 1)]


def test_unsupported_kernel_is_reported_per_case(pools):
    # sdpa_flash takes only full/causal steps: a document mask under ring cannot run.
    c = case_config("ring", mask="causal_document", seqlen=131, world=2, dtype="fp32", kernel="sdpa_flash")
    (r,) = _run(pools, 2, [c])
    assert "Unsupported" in r["exception"] and "sdpa_flash" in r["exception"]
