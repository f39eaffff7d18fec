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


def touched_tiles(mask: AttnMask, tile: int) -> int:
    """Number of (query tile, key tile) pairs with at least one visible pair."""
    return int(_touched_table(mask, tile).sum())


def tile_occupancy(mask: AttnMask, tile: int = 128) -> float:
    """Visible pairs / pairs in the touched tiles (edge tiles counted at their real size)."""
    if mask.area == 0:
        return 0.0
    nq, nk = -(-mask.seqlen_q // tile), -(-mask.seqlen_k // tile)
    q_sizes = np.full(nq, tile)
    q_sizes[-1] = mask.seqlen_q - tile * (nq - 1)
    k_sizes = np.full(nk, tile)
    k_sizes[-1] = mask.seqlen_k - tile * (nk - 1)
    # Each touched tile weighs its real size (only the last row/column of tiles can be short).
    return mask.area / float((_touched_table(mask, tile) * np.outer(q_sizes, k_sizes)).sum())


def _touched_table(mask: AttnMask, tile: int) -> np.ndarray:
    """[query tiles, key tiles] bool, exact: per query tile, a difference array over key tiles
    from every row's key intervals."""
    ri = mask.row_intervals
    nq, nk = -(-mask.seqlen_q // tile), -(-mask.seqlen_k // tile)
    rows = np.repeat(np.arange(mask.seqlen_q) // tile, ri.max_intervals)
    lo, hi = ri.lo.reshape(-1), ri.hi.reshape(-1)
    live = hi > lo
    diff = np.zeros((nq, nk + 1), dtype=np.int64)
    np.add.at(diff, (rows[live], lo[live] // tile), 1)
    np.add.at(diff, (rows[live], (hi[live] - 1) // tile + 1), -1)
    return np.cumsum(diff[:, :nk], axis=1) > 0
