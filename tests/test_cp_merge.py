"""The fp32 LSE merge equals attention over the union of key sets, whatever the tile order."""

import pytest
import torch

from lcab.cp.merge import LseAccumulator
from lcab.kernels.torch_eager import eager_attention


@pytest.mark.parametrize("order", ["whole_first", "partial_first"])
def test_merge_of_key_blocks_equals_full_attention(order):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 12, 2, 8, generator=g, dtype=torch.float64) for _ in range(3))
    ref, ref_lse = eager_attention(q, k, v, None)
    # Key blocks [0, 5) and [5, 12); rows [0, 6) get block 2 as a separate row-range tile.
    parts = [
        (0, 12, 0, 5),
        (0, 6, 5, 12),
        (6, 12, 5, 12),
    ]
    if order == "partial_first":
        parts = parts[1:] + parts[:1]
    acc = LseAccumulator(q)
    for q0, q1, k0, k1 in parts:
        o, lse = eager_attention(q[:, q0:q1], k[:, k0:k1], v[:, k0:k1], None)
        acc.add(o, lse, q0, q1)
    # eager_attention returns an fp32 LSE, so the merge weights carry fp32 rounding.
    torch.testing.assert_close(acc.out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(acc.lse, ref_lse.double(), rtol=1e-6, atol=1e-6)


def test_triton_merge_kernel_equals_the_reference_merge_in_the_interpreter():
    """The GPU merge kernel, run by Triton's CPU interpreter (scripts/merge_check.py, which also
    runs on the GPU): strided row slices, bf16 and fp32 steps, empty rows on either side and on
    both, and four merged key blocks against attention over all keys."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "scripts" / "merge_check.py"
    # TRITON_INTERPRET is read when the kernel is decorated; PYTHONPATH: this checkout's lcab.
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, str(script), "--device", "cpu"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "triton merge ok" in done.stdout


def test_first_whole_result_is_kept_and_only_touched_rows_are_merged():
    """A zigzag ring step after the diagonal one often touches few rows: the accumulator keeps
    the first whole result as it came and merges in fp32 over the touched rows only (widened as
    later steps touch more), with the values of attention over all keys."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 64, 2, 8, generator=g, dtype=torch.float64) for _ in range(3))
    # Each step a disjoint key block; rows [0, 40) see keys [0, 32) only.
    steps = [(0, 64, 0, 32), (40, 64, 32, 48), (48, 56, 48, 64), (56, 64, 48, 64)]
    acc = LseAccumulator(q)
    first = None
    for i, (q0, q1, k0, k1) in enumerate(steps):
        o, lse = eager_attention(q[:, q0:q1], k[:, k0:k1], v[:, k0:k1], None)
        first = o if i == 0 else first
        acc.add(o, lse, q0, q1)
        if i == 1:
            assert (acc.lo, acc.hi, acc.region[0].shape[1]) == (40, 64, 24)
    assert (acc.lo, acc.hi) == (40, 64)  # the later steps stayed inside rows [40, 64)
    untouched = first[:, :40].clone()
    out, lse = acc.result(torch.float64)
    assert out.data_ptr() == first.data_ptr()  # written into the first result, no new buffer
    assert torch.equal(out[:, :40], untouched)
    visible = torch.zeros(64, 64, dtype=torch.bool)
    visible[:, :32] = True
    visible[40:64, 32:48] = True
    visible[48:64, 48:64] = True
    ref, ref_lse = eager_attention(q, k, v, visible)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse, ref_lse.double(), rtol=1e-6, atol=1e-6)


def test_rows_no_result_reached_are_empty():
    q = torch.zeros(1, 10, 2, 4, dtype=torch.float32)
    acc = LseAccumulator(q)
    o, lse = eager_attention(torch.randn(1, 3, 2, 4), torch.randn(1, 5, 2, 4), torch.randn(1, 5, 2, 4), None)
    acc.add(o, lse, 2, 5)
    out, l_ = acc.result()
    assert out.dtype == torch.float32 and l_.dtype == torch.float64
    assert not out[:, :2].any() and not out[:, 5:].any() and torch.isinf(l_[:, :, :2]).all()
    torch.testing.assert_close(out[:, 2:5], o)


def test_results_on_disjoint_rows_are_kept_and_a_later_overlap_merges_only_its_rows():
    """All-gather CP calls one kernel per query run (disjoint rows): nothing is merged, no fp32
    buffer exists, result() writes each piece once; a later call over part of two pieces merges
    only those rows, against attention over the union of keys written here."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 48, 2, 8, generator=g, dtype=torch.float64) for _ in range(3))
    visible = torch.zeros(48, 48, dtype=torch.bool)
    acc = LseAccumulator(q)
    for q0, q1, k0, k1 in [(0, 16, 0, 16), (16, 40, 0, 40)]:  # rows 40..47 see nothing yet
        o, lse = eager_attention(q[:, q0:q1], k[:, k0:k1], v[:, k0:k1], None)
        acc.add(o, lse, q0, q1)
        visible[q0:q1, k0:k1] = True
    assert acc.region is None and len(acc.pieces) == 2
    out, lse = acc.result(torch.float64)
    ref, ref_lse = eager_attention(q, k, v, visible)
    torch.testing.assert_close(out[:, :40], ref[:, :40], rtol=1e-6, atol=1e-7)
    assert not out[:, 40:].any() and torch.isinf(lse[:, :, 40:]).all()
    o, lse = eager_attention(q[:, 8:44], k[:, 40:48], v[:, 40:48], None)  # rows 8..43, new keys
    acc.add(o, lse, 8, 44)
    visible[8:44, 40:48] = True
    assert (acc.lo, acc.hi) == (8, 44)  # rows 0..7 of the first piece stay as they came
    assert [p[:2] for p in acc.pieces] == [(0, 8)]
    out, lse = acc.result(torch.float64)
    ref, ref_lse = eager_attention(q, k, v, visible)
    torch.testing.assert_close(out[:, :44], ref[:, :44], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(lse[:, :, :44], ref_lse[:, :, :44].double(), rtol=1e-6, atol=1e-7)
    assert not out[:, 44:].any() and torch.isinf(lse[:, :, 44:]).all()


def test_row_sum_keeps_first_gradients_and_adds_overlaps_in_the_accumulation_dtype():
    from lcab.cp.merge import RowSum

    g = torch.Generator().manual_seed(3)
    parts = [(0, 6), (6, 10), (4, 8), (0, 10)]  # rows 4..7 reached three times, 0..3 and 8..9 twice
    grads = [torch.randn(1, b - a, 2, 3, generator=g).to(torch.bfloat16) for a, b in parts]
    acc = RowSum((1, 12, 2, 3), torch.bfloat16, torch.device("cpu"))
    acc.add(grads[0], *parts[0])
    acc.add(grads[1], *parts[1])
    assert acc.region is None  # disjoint so far: kept as they came
    for gr, (a, b) in zip(grads[2:], parts[2:], strict=True):
        acc.add(gr, a, b)
    ref = torch.zeros(1, 12, 2, 3, dtype=torch.float32)
    for gr, (a, b) in zip(grads, parts, strict=True):
        ref[:, a:b] += gr.float()
    out = acc.result(torch.float32)
    assert torch.equal(out, ref)  # fp32 sums of bf16 values in this order: exact
    assert not out[:, 10:].any()  # rows nothing reached


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_last_merge_into_the_first_result_equals_the_region_path(dtype):
    """A ring step's merge that no later step follows goes straight into the kept first result
    (no fp32 region): the same numbers, bit for bit, as cast-in, merge, round once."""
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 40, 2, 8, generator=g).to(dtype) for _ in range(3))
    steps = [(0, 40, 0, 24), (16, 40, 24, 40)]  # the second step reaches rows 16..39, last
    results = []
    for last in (False, True):
        acc = LseAccumulator(q)
        for i, (q0, q1, k0, k1) in enumerate(steps):
            o, lse = eager_attention(q[:, q0:q1], k[:, k0:k1], v[:, k0:k1], None)
            acc.add(o.to(dtype), lse.to(acc.acc), q0, q1, last=last and i == 1)
        assert (acc.region is None) == last
        results.append(acc.result())
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
