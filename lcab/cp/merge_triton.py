"""The fp32 log-sum-exp merge of a ring step as one in-place Triton kernel (GPU path).

Each program owns one query row and a block of heads: it reads the running (out, lse) and the
step's (out, lse), and writes the merged pair back in place, one pass over the fp32 buffer
(10 bytes an element for bf16 steps). torch.compile's version of the same expression wrote a
temporary and copied it back (two passes), 13% of a zigzag rank's forward on an H100.
The maths is lcab.cp.merge._merge's; tests run this kernel under TRITON_INTERPRET=1 on the CPU
against it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _merge_rows(
    acc_o,
    acc_l,
    out,
    lse,
    S,
    H,
    D,
    ao_b,
    ao_s,
    ao_h,
    ao_d,
    al_b,
    al_h,
    al_s,
    o_b,
    o_s,
    o_h,
    o_d,
    l_b,
    l_h,
    l_s,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0)
    b = row // S
    s = row % S
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    hm = h < H
    m2 = hm[:, None] & (d < D)[None, :]
    la = tl.load(acc_l + b * al_b + h * al_h + s * al_s, mask=hm, other=float("-inf"))
    lb = tl.load(lse + b * l_b + h * l_h + s * l_s, mask=hm, other=float("-inf")).to(tl.float32)
    top = tl.maximum(la, lb)
    ref = tl.where(top == float("-inf"), 0.0, top)  # both empty: weights 0, lse stays -inf
    ea = tl.exp(la - ref)
    eb = tl.exp(lb - ref)
    tot = ea + eb
    live = tot > 0
    wa = tl.where(live, ea / tot, 0.0)
    wb = tl.where(live, eb / tot, 0.0)
    new = tl.where(live, ref + tl.log(tot), float("-inf"))
    pa = acc_o + b * ao_b + s * ao_s + h[:, None] * ao_h + d[None, :] * ao_d
    pb = out + b * o_b + s * o_s + h[:, None] * o_h + d[None, :] * o_d
    oa = tl.load(pa, mask=m2, other=0.0).to(tl.float32)
    ob = tl.load(pb, mask=m2, other=0.0).to(tl.float32)
    res = wa[:, None] * oa + wb[:, None] * ob
    if pa.dtype.element_ty == tl.bfloat16:
        # A last merge into bf16: round to nearest even on the bits (as torch's cast does), so the
        # cast below is exact whatever rounding the backend (or Triton's interpreter) applies.
        bits = res.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        res = bits.to(tl.float32, bitcast=True).to(tl.bfloat16)
    tl.store(pa, res, mask=m2)
    tl.store(acc_l + b * al_b + h * al_h + s * al_s, new, mask=hm)


def merge_rows(acc_o: torch.Tensor, acc_l: torch.Tensor, out: torch.Tensor, lse: torch.Tensor) -> None:
    """In place: acc_o [B, S, H, D] (fp32, or a row's last merge straight into its bf16
    first result: the maths stays fp32, rounded once at the store), acc_l [B, H, S] fp32; out
    [B, S, H, D] in the step's dtype, lse [B, H, S]. Any strides (row slices of a larger buffer
    included)."""
    if acc_l.dtype != torch.float32 or acc_o.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(
            f"merge_rows takes an fp32 lse and fp32/bf16/fp16 out, got {acc_o.dtype} / {acc_l.dtype}"
        )
    b, s, h, d = acc_o.shape
    if out.shape != acc_o.shape or lse.shape != acc_l.shape or acc_l.shape != (b, h, s):
        raise ValueError(
            f"merge shapes disagree: acc {tuple(acc_o.shape)}/{tuple(acc_l.shape)}, "
            f"step {tuple(out.shape)}/{tuple(lse.shape)}"
        )
    block_d = triton.next_power_of_2(d)
    block_h = max(1, min(triton.next_power_of_2(h), 4096 // block_d))  # ~4K elements a program
    grid = (b * s, triton.cdiv(h, block_h))
    _merge_rows[grid](
        acc_o,
        acc_l,
        out,
        lse,
        s,
        h,
        d,
        *acc_o.stride(),
        *acc_l.stride(),
        *out.stride(),
        *lse.stride(),
        BLOCK_H=block_h,
        BLOCK_D=block_d,
    )
