"""The Triton LSE merge (lcab/cp/merge_triton.py) against the eager fp32 merge and full attention.

    python scripts/merge_check.py --device cuda              # the GPU kernel itself
    TRITON_INTERPRET=1 python scripts/merge_check.py --device cpu   # Triton's CPU interpreter (tests)

Checks: strided row slices of a larger accumulator, bf16 and fp32 step outputs, rows empty on
either side and on both; then attention over four key blocks merged step by step equals
attention over all keys (fp64 reference). Prints "triton merge ok" or raises.
"""

from __future__ import annotations

import argparse

import torch

from lcab.cp.merge import _merge
from lcab.cp.merge_triton import merge_rows
from lcab.kernels.torch_eager import eager_attention


def check_against_eager(device: torch.device, b: int, s: int, h: int, d: int) -> None:
    g = torch.Generator().manual_seed(1)
    for step_dtype in (torch.bfloat16, torch.float32):
        acc_o = torch.randn(b, s, h, d, generator=g)
        acc_l = torch.randn(b, h, s, generator=g) * 3
        out = torch.randn(b, s - 4, h, d, generator=g).to(step_dtype)
        lse = torch.randn(b, h, s - 4, generator=g) * 3
        acc_l[0, 1, 2] = float("-inf")  # accumulator row empty so far
        lse[-1, 2, 0] = float("-inf")  # step row empty
        acc_l[0, 3, 4] = float("-inf")  # both empty (accumulator row 4 is step row 2)
        lse[0, 3, 2] = float("-inf")
        ref_o, ref_l = acc_o.clone(), acc_l.clone()
        _merge(ref_o[:, 2 : s - 2], ref_l[:, :, 2 : s - 2], out, lse)
        acc_o, acc_l, out, lse = (t.to(device) for t in (acc_o, acc_l, out, lse))
        merge_rows(acc_o[:, 2 : s - 2], acc_l[:, :, 2 : s - 2], out, lse)  # in place, strided
        torch.testing.assert_close(acc_o.cpu(), ref_o, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(acc_l.cpu(), ref_l, rtol=1e-5, atol=1e-5)
        assert torch.isneginf(acc_l[0, 3, 4]).item() and acc_o[0, 4, 3].abs().max().item() == 0


def check_final_into_bf16(device: torch.device, b: int, s: int, h: int, d: int) -> None:
    """A row's last merge straight into its bf16 first result equals the fp32 path (cast in,
    merge, round once) bit for bit."""
    g = torch.Generator().manual_seed(3)
    first = torch.randn(b, s, h, d, generator=g).to(torch.bfloat16)
    first_l = torch.randn(b, h, s, generator=g) * 3
    out = torch.randn(b, s - 4, h, d, generator=g).to(torch.bfloat16)
    lse = torch.randn(b, h, s - 4, generator=g) * 3
    first_l[0, 1, 3] = float("-inf")
    first, first_l, out, lse = (t.to(device) for t in (first, first_l, out, lse))
    ref_o, ref_l = first.float(), first_l.clone()
    merge_rows(ref_o[:, 2 : s - 2], ref_l[:, :, 2 : s - 2], out, lse)
    merge_rows(first[:, 2 : s - 2], first_l[:, :, 2 : s - 2], out, lse)  # in place, bf16
    assert torch.equal(first, ref_o.to(torch.bfloat16)) and torch.equal(first_l, ref_l)


def check_key_blocks(device: torch.device, s: int, h: int, d: int) -> None:
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, s, h, d, generator=g, dtype=torch.float64) for _ in range(3))
    ref, _ = eager_attention(q, k, v, None)
    acc_o = torch.zeros(1, s, h, d, device=device)
    acc_l = torch.full((1, h, s), float("-inf"), device=device)
    for k0 in range(0, s, s // 4):
        o, lse = eager_attention(q, k[:, k0 : k0 + s // 4], v[:, k0 : k0 + s // 4], None)
        merge_rows(acc_o, acc_l, o.to(device, torch.bfloat16), lse.to(device, torch.float32))
    torch.testing.assert_close(acc_o.double().cpu(), ref, rtol=2e-2, atol=2e-2)  # bf16 steps


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    dev = torch.device(a.device)
    check_against_eager(dev, 2, 13, 6, 24)  # H and D not powers of two: masked lanes
    check_final_into_bf16(dev, 2, 13, 6, 24)
    if dev.type == "cuda":
        check_against_eager(dev, 1, 8192, 64, 128)  # a ring step's real shape
    check_key_blocks(dev, 64 if dev.type == "cpu" else 1024, 4, 32)
    print("triton merge ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
