"""How much of the work a tile-skipping kernel must do on a mask is useful.

Flash-style kernels (cuDNN, FlashAttention, Flex) compute whole tiles of queries x keys and skip
only the tiles with nothing visible. On a mask, such a kernel's best mask-aware throughput is
its full-mask throughput times the tile occupancy = visible pairs / pairs in touched tiles.
Partial tiles (document edges, window edges, the diagonal) cost a whole tile; per-tile fixed
costs (loading Q, writing O) come on top, so measured fractions sit below this bound.
"""

from __future__ import annotations

import numpy as np

from lcab.masks.slices import AttnMask


def tile_counts(mask: AttnMask, tile: int, tile_k: int | None = None) -> np.ndarray:
    """[query tiles, key tiles] int64: the visible (q, k) pairs in each tile (tile x tile_k,
    square by default), exact.

    Per row, the visible keys left of a key-tile edge x are sum_j clip(x - lo_j, 0, hi_j - lo_j)
    over the row's intervals; differences across edges give the row's count per key tile, and
    rows add up per query tile. Done in chunks of whole query tiles (~4M values each)."""
    tile_k = tile if tile_k is None else tile_k
    ri = mask.row_intervals
    sq, sk = mask.seqlen_q, mask.seqlen_k
    nq, nk = -(-sq // tile), -(-sk // tile_k)
    edges = np.minimum(np.arange(nk + 1, dtype=np.int64) * tile_k, sk)[None, :, None]
    lengths = np.maximum(ri.hi - ri.lo, 0)
    out = np.zeros((nq, nk), dtype=np.int64)
    step = tile * max(1, (1 << 22) // (tile * (nk + 1) * ri.max_intervals))
    for r0 in range(0, sq, step):
        r1 = min(sq, r0 + step)
        left = np.clip(edges - ri.lo[r0:r1, None, :], 0, lengths[r0:r1, None, :]).sum(axis=2)
        out[r0 // tile : -(-r1 // tile)] = np.add.reduceat(
            np.diff(left, axis=1), np.arange(0, r1 - r0, tile), axis=0
        )
    return out


def tile_sizes(n: int, tile: int) -> np.ndarray:
    """Sizes of the tiles covering n positions (only the last can be short)."""
    sizes = np.full(-(-n // tile), tile, dtype=np.int64)
    sizes[-1] = n - tile * (len(sizes) - 1)
    return sizes


def tile_pairs(mask: AttnMask, tile: int, tile_k: int | None = None) -> np.ndarray:
    """[query tiles, key tiles] int64: the (q, k) pairs each tile covers inside S_q x S_k."""
    return np.outer(
        tile_sizes(mask.seqlen_q, tile), tile_sizes(mask.seqlen_k, tile if tile_k is None else tile_k)
    )


def touched_tiles(mask: AttnMask, tile: int) -> int:
    """Number of (query tile, key tile) pairs with at least one visible pair."""
    return int((tile_counts(mask, tile) > 0).sum())


def touched_pairs(mask: AttnMask, tile: int = 128, tile_k: int | None = None) -> int:
    """Pairs in the touched tiles, each at its real size (only the last row/column can be short)."""
    return int(((tile_counts(mask, tile, tile_k) > 0) * tile_pairs(mask, tile, tile_k)).sum())


def tile_occupancy(mask: AttnMask, tile: int = 128, tile_k: int | None = None) -> float:
    """Visible pairs / pairs in the touched tiles (edge tiles counted at their real size)."""
    return mask.area / float(touched_pairs(mask, tile, tile_k)) if mask.area else 0.0
