"""FlexAttention forms: a mask_mod evaluated from tensors derived from the mask, and its BlockMask.

mask_mod picks the cheapest exact form the mask allows:
  tile table   mask.tile set (block sparse): one bool per (query block, key block)
  slices       the slices' closed form, integer compares only, no memory reads (on request:
               one compiled kernel per mask; not faster on windows, see mask_mod_kind)
  intervals    at most MAX_INTERVALS key ranges per row: an OR of range checks on per-row bounds
  dense        anything else: a [S_q, S_k] bool lookup (S^2 bytes; a fallback, not a fast path)
Indices are clamped before every lookup because compiled Flex kernels may evaluate mask_mod
on the padding of a partial last block; those positions are masked by the kernel anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask

from lcab.masks.slices import AttnMask, SliceType
from lcab.masks.tiles import tile_counts, tile_pairs

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
MAX_INTERVALS = 4
FORMS = ("tile", "slices", "intervals", "dense")


def tile_table(mask: AttnMask) -> np.ndarray | None:
    """[ceil(S_q/t), ceil(S_k/t)] bool of visible tiles, or None if the slices are not full,
    tile-aligned rectangles (then the tile table would not be exact)."""
    t = mask.tile
    if not t:
        return None
    nq, nk = -(-mask.seqlen_q // t), -(-mask.seqlen_k // t)
    table = np.zeros((nq, nk), dtype=bool)
    for s in mask.slices:
        aligned = s.q0 % t == 0 and s.k0 % t == 0
        aligned &= (s.q1 % t == 0 or s.q1 == mask.seqlen_q) and (s.k1 % t == 0 or s.k1 == mask.seqlen_k)
        if s.type != SliceType.FULL or not aligned:
            return None
        table[s.q0 // t : -(-s.q1 // t), s.k0 // t : -(-s.k1 // t)] = True
    return table


def mask_mod(mask: AttnMask, device: torch.device | str = "cpu", form: str | None = None) -> MaskMod:
    """A Flex mask_mod(b, h, q_idx, kv_idx) -> bool that is exactly mask.dense().

    form: one of FORMS, None = mask_mod_kind(mask). Every form is exact for every mask except
    `tile`, which needs tile-aligned full slices (ValueError otherwise)."""
    device = torch.device(device)
    form = form or mask_mod_kind(mask)
    if form not in FORMS:
        raise ValueError(f"flex mask_mod form {form!r} is not one of {', '.join(FORMS)}")
    sq, sk = mask.seqlen_q, mask.seqlen_k
    if form == "tile":
        table = tile_table(mask)
        if table is None:
            raise ValueError(f"mask {mask.name} has no exact tile table (not tile-aligned full slices)")
        t = mask.tile
        tiles = torch.from_numpy(table).to(device)

        def tile_mod(b, h, q_idx, kv_idx):
            return tiles[q_idx.clamp(0, sq - 1) // t, kv_idx.clamp(0, sk - 1) // t]

        return tile_mod

    if form == "slices":
        slices = mask.slices

        def slice_mod(b, h, q_idx, kv_idx):
            out = None
            for s in slices:
                i, j = q_idx - s.q0, kv_idx - s.k0
                term = (i >= 0) & (i < s.rows) & (j >= 0) & (j < s.cols)
                if s.type in (SliceType.CAUSAL, SliceType.BI_CAUSAL):
                    term = term & (j <= i + (s.cols - s.rows))  # bottom-right aligned
                if s.type in (SliceType.INV_CAUSAL, SliceType.BI_CAUSAL):
                    term = term & (j >= i)  # top-left aligned
                out = term if out is None else out | term
            return out

        return slice_mod

    if form == "intervals":
        ri = mask.row_intervals
        los = [torch.from_numpy(ri.lo[:, j].astype(np.int32)).to(device) for j in range(ri.max_intervals)]
        his = [torch.from_numpy(ri.hi[:, j].astype(np.int32)).to(device) for j in range(ri.max_intervals)]

        def interval_mod(b, h, q_idx, kv_idx):
            q = q_idx.clamp(0, sq - 1)
            out = (los[0][q] <= kv_idx) & (kv_idx < his[0][q])
            for lo, hi in zip(los[1:], his[1:], strict=True):
                out = out | ((lo[q] <= kv_idx) & (kv_idx < hi[q]))
            return out

        return interval_mod

    dense = mask.dense(device)

    def dense_mod(b, h, q_idx, kv_idx):
        return dense[q_idx.clamp(0, sq - 1), kv_idx.clamp(0, sk - 1)]

    return dense_mod


def mask_mod_kind(mask: AttnMask) -> str:
    """The form mask_mod takes by default: 'tile', 'intervals' or 'dense' ('slices' on request).

    `intervals` has the same code for every mask with one key range per row, so those masks
    share one compiled kernel per length. The closed form of a window (`slices`) was measured
    against it on an H100 (scripts/flex_mask_mod_check.py, docs/results/h100/paper_kernels/logs):
    sliding_window_causal 32K 3.6% slower forward, 2.7% faster backward; sliding_window 6.7%
    and 1.9% slower. So it is not the default."""
    if tile_table(mask) is not None:
        return "tile"
    return "intervals" if mask.row_intervals.max_intervals <= MAX_INTERVALS else "dense"


def block_mask(
    mask: AttnMask, block_size: int = 128, device: torch.device | str = "cpu", form: str | None = None
) -> BlockMask:
    """The mask's BlockMask (B = H = None: shared by every batch row and head).

    Built from the mask's exact per-tile pair counts (lcab.masks.tiles), not by evaluating
    mask_mod on a grid: a tile is full when every in-range pair is visible, partial when some
    are, absent when none are, which is what torch's create_block_mask computes. Its compiled
    version took 233.9 s for one (mask_mod, 16K) on an H100, all in LLVM for one reduction kernel
    (docs/results/h100/paper_kernels/logs/session4/flex_compile_large.txt); its eager version
    materialises S^2 bools.
    Cached per (mask, block size, device, mask_mod form): masks compare by their slices, so
    cells with the same mask share one.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return _block_mask(mask, int(block_size), str(dev), form or mask_mod_kind(mask))


@lru_cache(maxsize=32)
def _block_mask(mask: AttnMask, block_size: int, device: str, form: str) -> BlockMask:
    counts = tile_counts(mask, block_size)
    full = counts == tile_pairs(mask, block_size)
    partial = (counts > 0) & ~full
    kv_num, kv_idx = _ordered(partial, device)
    full_num, full_idx = _ordered(full, device)
    return BlockMask.from_kv_blocks(
        kv_num,
        kv_idx,
        full_num,
        full_idx,
        BLOCK_SIZE=block_size,
        mask_mod=mask_mod(mask, device, form),
        seq_lengths=(mask.seqlen_q, mask.seqlen_k),
    )


def _ordered(blocks: np.ndarray, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A BlockMask row layout: per query tile, the number of set key tiles and all key tile
    indices with the set ones first, ascending ([1, 1, q tiles] and [1, 1, q tiles, k tiles])."""
    num = blocks.sum(axis=1).astype(np.int32)
    idx = np.argsort(~blocks, axis=1, kind="stable").astype(np.int32)
    return (
        torch.from_numpy(num)[None, None].to(device),
        torch.from_numpy(idx)[None, None].contiguous().to(device),
    )


def clear_cache() -> None:
    _block_mask.cache_clear()
