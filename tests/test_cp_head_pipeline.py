"""Ulysses pipelined over head chunks (lcab.cp.head_pipeline): exact against the fp64 reference
for every chunk count in real gloo groups, the exchange of chunk c+1 issued before chunk c
computes, and a chunk count that splits a GQA group refused with one line."""

from __future__ import annotations

import pytest
import torch

from lcab.config import ConfigError
from lcab.cp import registry as strategies
from lcab.cp.head_pipeline import _pipelined, auto_chunks
from lcab.cp.selfcheck import case_config, check_cases
from lcab.kernels.base import ShapeSpec

MASKS = ["full", "causal", "causal_document", "block_sparse"]


def _cases():
    cases = []
    for cp, heads, chunks in (
        ("ulysses", (8, 4), 0),
        ("ulysses", (16, 8), 4),
        ("ulysses", (8, 4), 1),
        ("usp", (8, 4), 2),
    ):
        for mask in MASKS:
            for shard, s in (("zigzag", 128), ("contiguous", 131)):  # 131: padded buffer
                opts = (
                    {"head_chunks": chunks} if cp == "ulysses" else {"head_chunks": chunks, "ring_degree": 1}
                )
                cases.append(
                    case_config(cp, mask=mask, seqlen=s, shard=shard, heads=heads, dtype="fp32", **opts)
                )
    return cases


def test_chunked_ulysses_matches_reference(pools):
    cases = _cases()
    results = pools(2).run(check_cases, cases, timeout_s=600)
    bad = [
        f"{c['cp']['name']}/{c['shape']['heads_q']}/{c['cp']['head_chunks']}/{c['mask']['name']}/{c['cp']['shard']}: {r}"
        for c, r in zip(cases, results, strict=True)
        if r is None or "exception" in r or not r["passed"]
    ]
    assert not bad
    for c, r in zip(cases, results, strict=True):
        # kv heads per rank after the all-to-all: 4:2 -> auto 2 chunks; 8:4 -> 4 as asked; 1 -> 1
        n = c["cp"]["head_chunks"] or 2
        assert r["degrees"][:2] == (2, 1)
        # every chunk's q travels once forward, its dout once backward, on each rank
        assert all(calls["a2a_q"] == n and calls["a2a_out_bwd"] == n for calls in r["calls"]), (c, r["calls"])


def test_next_exchange_is_in_flight_while_a_chunk_computes():
    log: list[str] = []

    class Ex:
        def __init__(self, name):
            self.name = name
            log.append(f"start {name}")

        def wait(self):
            log.append(f"wait {self.name}")
            return [self.name]

    _pipelined(
        3,
        send=lambda c: Ex(f"in{c}"),
        compute=lambda c, got: log.append(f"compute{c} on {got[0]}") or [c],
        back=lambda c, res: Ex(f"out{c}"),
        land=lambda c, got: log.append(f"land{c} from {got[0]}"),
    )
    assert log == [
        "start in0",
        "start in1",  # chunk 1 travels while chunk 0 computes
        "wait in0",
        "compute0 on in0",
        "start out0",
        "start in2",
        "wait in1",
        "compute1 on in1",
        "start out1",
        "wait out0",  # chunk 0's output lands after chunk 1 was issued
        "land0 from out0",
        "wait in2",
        "compute2 on in2",
        "start out2",
        "wait out1",
        "land1 from out1",
        "wait out2",
        "land2 from out2",
    ]


def test_auto_chunks_keep_whole_gqa_groups():
    assert [auto_chunks(k) for k in (1, 2, 3, 4, 6, 8, 12)] == [1, 2, 3, 4, 3, 4, 4]


@pytest.mark.parametrize(("cp", "opts"), [("ulysses", {}), ("usp", {"ulysses_degree": 2, "ring_degree": 1})])
def test_chunks_that_split_a_kv_head_are_refused(cp, opts):
    shape = ShapeSpec(1, 64, 8, 128, torch.bfloat16, torch.device("cpu"))  # 4 kv heads per rank at world 2
    s = strategies.get(cp)
    assert s.check({**opts, "head_chunks": 4}, shape, 2).head_chunks == 4
    assert s.check({**opts, "head_chunks": 0}, shape, 2).head_chunks == 4  # auto
    assert s.check(opts, shape, 2).head_chunks == 1  # the default: no overlap (measured faster)
    with pytest.raises(ConfigError, match=r"^cp.exchange must be one of all_to_all, pairwise, not 'nccl'$"):
        s.check({**opts, "exchange": "nccl"}, shape, 2)
    with pytest.raises(ConfigError, match=r"^head_chunks 3 does not divide the 4 kv heads a rank holds"):
        s.check({**opts, "head_chunks": 3}, shape, 2)


def test_usp_ring_takes_the_exchange_and_refuses_chunks(pools):
    """usp with a ring (U2 x R2 at world 4) moves its heads by cp.exchange too, exact against fp64
    with either exchange; head_chunks there is refused, not ignored."""
    cases = [
        case_config(
            "usp", mask=m, seqlen=128, heads=(8, 4), dtype="fp32", world=4, ring_degree=2, exchange=ex
        )
        for m in ("causal", "causal_document")
        for ex in ("all_to_all", "pairwise")
    ]
    results = pools(4).run(check_cases, cases, timeout_s=600)
    assert all(r and r.get("passed") for r in results), results
    assert all(r["degrees"][:2] == (2, 2) for r in results)
    assert all(calls["a2a_q"] == 1 for r in results for calls in r["calls"])  # one exchange of q per rank
    shape = ShapeSpec(1, 64, 8, 128, torch.bfloat16, torch.device("cpu"))
    s = strategies.get("usp")
    assert (
        s.check({"ulysses_degree": 2, "ring_degree": 2, "exchange": "pairwise"}, shape, 4).exchange
        == "pairwise"
    )
    with pytest.raises(ConfigError, match=r"^usp head_chunks 2 needs ring degree 1 \(ring degree is 2\)$"):
        s.check({"ulysses_degree": 2, "ring_degree": 2, "head_chunks": 2}, shape, 4)
