"""FLOP arithmetic on hand-computed cases, the timing protocol, seqlen parsing and the store."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest
import torch

from lcab.config import ConfigError, parse_seqlen
from lcab.harness.flops import attention_flops, tflops_per_s
from lcab.harness.peaks import peak_tflops
from lcab.harness.timing import Schedule, Timing, measure
from lcab.masks.slices import AttnMask, Slice
from lcab.results.schema import Result
from lcab.results.store import ResultStore


def test_causal_area_and_flops_by_hand():
    # One causal slice of side S has S(S+1)/2 visible pairs: S=4 -> 10.
    m = AttnMask((Slice(0, 4, 0, 4, "causal"),), 4, 4)
    assert m.area == 10
    # 4 * area * Hq * d * B = 4 * 10 * 2 * 8 * 3 = 1920 for fwd; 2.5x bwd; 3.5x fwd_bwd.
    assert attention_flops(10, 2, 8, 3, "fwd") == 1920
    assert attention_flops(10, 2, 8, 3, "bwd") == 4800
    assert attention_flops(10, 2, 8, 3, "fwd_bwd") == 6720


def test_paper_scale_flops():
    # Full 32K, 64 heads, d 128: 4 * 32768^2 * 64 * 128 = 35184372088832 FLOPs forward.
    s = 32768
    full = AttnMask((Slice(0, s, 0, s, "full"),), s, s)
    assert attention_flops(full.area, 64, 128, 1, "fwd") == 35_184_372_088_832
    # At 50 ms that is 703.7 TFLOPs/s; over 8 ranks with the max time it is per GPU.
    assert tflops_per_s(35_184_372_088_832, 0.05) == pytest.approx(703.687, rel=1e-5)
    assert tflops_per_s(35_184_372_088_832, 0.05, world=8) == pytest.approx(87.961, rel=1e-4)


def test_slice_types_by_hand():
    # 3 rows x 5 cols: causal bottom-right -> rows see 3, 4, 5; inv_causal top-left -> 5, 4, 3;
    # bi_causal band -> 3, 3, 3.
    assert Slice(0, 3, 0, 5, "causal").area() == 12
    assert Slice(0, 3, 0, 5, "inv_causal").area() == 12
    assert Slice(0, 3, 0, 5, "bi_causal").area() == 9
    # 5 rows x 3 cols causal: row i sees i - 1 keys, clipped to [0, 3] -> 0, 0, 1, 2, 3.
    assert Slice(0, 5, 0, 3, "causal").area() == 6


def test_overlapping_slices_rejected():
    m = AttnMask((Slice(0, 4, 0, 4, "full"), Slice(0, 4, 0, 4, "causal")), 4, 4)
    with pytest.raises(ValueError, match="overlap"):
        _ = m.row_intervals


@pytest.mark.parametrize(
    ("text", "n"), [("4k", 4096), ("32K", 32768), ("1m", 1048576), ("4096", 4096), (1000, 1000)]
)
def test_parse_seqlen(text, n):
    assert parse_seqlen(text) == n


@pytest.mark.parametrize("text", ["abc", "4g", "", "-1", "0"])
def test_parse_seqlen_rejects(text):
    with pytest.raises(ConfigError, match="seqlen"):
        parse_seqlen(text)


def test_measure_counts_calls_and_quantiles():
    calls = []
    t = measure(lambda: calls.append(1), torch.device("cpu"), Schedule(warmup=3, iters=7))
    assert len(calls) == 1 + 3 + 7
    assert len(t.times_ms) == 7
    q = Timing((1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0))
    assert (q.p20, q.p50, q.p80) == (3.0, 6.0, 9.0)
    assert q.spread == pytest.approx(6.0 / 6.0)


class _VirtualCalls:
    """A call whose n-th invocation takes durations_ms[n % len] on a virtual clock: the adaptive
    schedule sees exact durations whatever else the machine is doing (a real sleep overshoots
    under load, which made these counts flaky)."""

    def __init__(self, durations_ms: list[float]) -> None:
        self.durations_ms = durations_ms
        self.count = 0
        self.now_s = 0.0

    def clock(self) -> float:
        return self.now_s

    def __call__(self) -> None:
        self.now_s += self.durations_ms[self.count % len(self.durations_ms)] / 1e3
        self.count += 1


def _measure_virtual(durations_ms, schedule):
    call = _VirtualCalls(durations_ms)
    return call, measure(call, torch.device("cpu"), schedule, clock=call.clock)


def test_adaptive_schedule_sizes_a_slow_cell_down_to_min_iters():
    # 20 ms a call, budget 30 ms: ceil(30/20) = 2 calls is under the floor of 3; warmup
    # ceil(30/4/20) = 1 is the probe call itself.
    call, t = _measure_virtual([20.0], Schedule(warmup=10, iters=50, budget_ms=30.0, min_iters=3))
    assert t.times_ms == pytest.approx((20.0, 20.0, 20.0))
    assert t.warmup == 1
    assert call.count == 1 + 1 + 3  # first call, probe, timed


def test_adaptive_schedule_gives_a_fast_cell_budget_over_call_time_iters():
    # 2 ms a call, budget 40 ms: 40/2 = 20 timed calls, warmup ceil(40/4/2) = 5 (probe included).
    schedule = Schedule(warmup=10, iters=50, budget_ms=40.0, min_iters=3)
    call, t = _measure_virtual([2.0], schedule)
    assert len(t.times_ms) == 20 and t.warmup == 5
    assert call.count == 1 + 5 + 20


def test_adaptive_schedule_times_more_calls_while_the_spread_is_high():
    # Alternating 2 / 8 ms: the probe (8 ms) sizes 3 timed calls; p20..p80 spans both values,
    # so rounds double (3 -> 6 -> 12 -> 24) until iters.
    _, noisy = _measure_virtual([2.0, 8.0], Schedule(warmup=2, iters=24, budget_ms=20.0, min_iters=3))
    assert len(noisy.times_ms) == 24
    assert noisy.spread > 0.02
    _, fixed = _measure_virtual([2.0, 8.0], Schedule(warmup=2, iters=24))
    assert len(fixed.times_ms) == 24 and fixed.warmup == 2


def test_adaptive_extension_stops_at_extend_ms():
    # Alternating 10 / 40 ms, probe 40 ms: 3 timed calls (10, 40, 10 = 60 ms). extend_ms=200:
    # (200 - 60) // 20 = 7 rounds affordable, 3 taken (40, 10, 40: 150 ms); then (200 - 150) //
    # 25 = 2 (10, 40: 200 ms); then none. The spread stays high and is kept, not timed away.
    s = Schedule(warmup=2, iters=24, budget_ms=60.0, min_iters=3, extend_ms=200.0)
    _, t = _measure_virtual([10.0, 40.0], s)
    assert t.times_ms == pytest.approx((10.0, 40.0, 10.0, 40.0, 10.0, 40.0, 10.0, 40.0))
    assert sum(t.times_ms) == pytest.approx(200.0)
    assert t.spread > 0.02


def test_peak_table_specific_first():
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert peak_tflops("Some CPU", "fp32") is None


def _append_many(path: str, start: int) -> None:
    store = ResultStore(path)
    for i in range(start, start + 50):
        store.append(Result(cell_id=f"c{i}", status="ok", metrics={"x": i, "pad": "y" * 5000}))


def test_store_concurrent_appends_keep_every_row(tmp_path):
    path = str(tmp_path / "r.jsonl")
    procs = [mp.get_context("spawn").Process(target=_append_many, args=(path, k * 50)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    rows = ResultStore(path).rows()
    assert sorted(r["cell_id"] for r in rows) == sorted(f"c{i}" for i in range(150))


def test_store_skips_truncated_tail_and_resume_rules(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path)
    store.append(Result(cell_id="a", status="ok"))
    store.append(Result(cell_id="b", status="error", reason="boom"))
    store.append(Result(cell_id="c", status="unsupported", reason="no"))
    with open(path, "a") as f:
        f.write(json.dumps({"cell_id": "d", "status": "ok"})[:10])  # a row cut by a kill
    assert [r["cell_id"] for r in store.rows()] == ["a", "b", "c"]
    assert store.done("a", rerun_failed=False)
    assert not store.done("b", rerun_failed=False)
    assert store.done("c", rerun_failed=False)
    assert not store.done("c", rerun_failed=True)
    assert not store.done("d", rerun_failed=False)
    # The status index is read incrementally: the rest of the cut line, then a newer row for a.
    with open(path, "a") as f:
        f.write(json.dumps({"cell_id": "d", "status": "ok"})[10:] + "\n")
    ResultStore(path).append(Result(cell_id="a", status="interrupted"))
    assert store.done("d", rerun_failed=False)
    assert not ResultStore(path).done("a", rerun_failed=False)  # the newest row wins
    # A store replaced by a shorter file is read again from its start.
    path.write_text(json.dumps({"cell_id": "e", "status": "ok"}) + "\n")
    assert store.done("e", rerun_failed=False) and not store.done("c", rerun_failed=False)


def test_above_peak_is_invalid_never_a_result():
    from lcab.results.outcome import judge

    assert judge({"tflops": 990.0, "peak_tflops": 989.0})[0] == "invalid"
    assert "above its peak 989" in judge({"tflops": 990.0, "peak_tflops": 989.0})[1]
    assert judge({"tflops": 600.0, "peak_tflops": 989.0}) == ("ok", "")
    assert judge({"tflops": 1.0, "peak_tflops": None}) == ("ok", "")
    assert judge({"tflops": 1.0, "verify_passed": False, "verify_failures": ["out error"]})[0] == "invalid"


def test_throughput_is_per_device_over_max_time():
    from lcab.harness.throughput import Work, throughput

    work = Work(area=10, heads_q=2, head_dim=8, batch=3, mode="fwd", dtype="fp32")
    m = throughput(work, p50_ms=2.0, world=4, device=torch.device("cpu"))
    # 1920 FLOPs over (2 ms x 4 devices) = 2.4e-7 TFLOPs/s; no peak on a CPU.
    assert m["flops"] == 1920 and m["tflops"] == pytest.approx(2.4e-7)
    assert m["peak_tflops"] is None and m["mfu"] is None


def test_interleaved_timing_is_round_robin():
    from lcab.harness.timing import measure_interleaved

    order: list[str] = []
    calls = [lambda: order.append("a"), lambda: order.append("b")]
    ta, tb = measure_interleaved(calls, torch.device("cpu"), Schedule(warmup=1, iters=3))
    # first calls, one warmup round, then three timed rounds: always a then b.
    assert order == ["a", "b"] * 5
    assert len(ta.times_ms) == len(tb.times_ms) == 3


def test_first_call_is_recorded_apart_from_the_timed_calls():
    # A 3000 ms first call (a JIT compile), then 2 ms calls: only the first shows in first_call_ms.
    call, t = _measure_virtual([3000.0] + [2.0] * 9, Schedule(warmup=2, iters=5))
    assert call.count == 1 + 2 + 5  # first, warmup, timed
    assert t.first_call_ms == pytest.approx(3000.0)
    assert t.times_ms == pytest.approx((2.0,) * 5)
    assert t.summary()["first_call_ms"] == pytest.approx(3000.0)
