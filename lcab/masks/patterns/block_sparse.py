from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lcab.masks.registry import register
from lcab.masks.slices import AttnMask, Slice, SliceType

if TYPE_CHECKING:
    from lcab.config import BlockSparseMaskConfig


def kept_blocks(density: float, n_blocks: int) -> int:
    """round(density * n_blocks), but at least 1 so no query row is empty (softmax over nothing)."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"block_sparse density must be in (0, 1], got {density}")
    return min(n_blocks, max(1, round(density * n_blocks)))


def block_table(cfg: BlockSparseMaskConfig, seqlen: int) -> np.ndarray:
    """[n_blocks, n_blocks] bool: which key blocks each query block keeps; seeded by cfg.seed."""
    b = cfg.sparse_block
    if b < 1:
        raise ValueError(f"block_sparse sparse_block must be >= 1, got {b}")
    nb = -(-seqlen // b)
    k = kept_blocks(cfg.density, nb)
    rng = np.random.default_rng(cfg.seed)
    # k distinct key blocks per query block, uniformly: the k smallest of nb random keys.
    chosen = np.argsort(rng.random((nb, nb)), axis=1)[:, :k]
    table = np.zeros((nb, nb), dtype=bool)
    np.put_along_axis(table, chosen, True, axis=1)
    return table


@register("block_sparse")
def block_sparse(cfg: BlockSparseMaskConfig, seqlen: int) -> AttnMask:
    b = cfg.sparse_block
    table = block_table(cfg, seqlen)
    nb = table.shape[0]
    # Runs of adjacent kept key blocks become one slice (still full and block-aligned).
    pad = np.zeros((nb, 1), dtype=bool)
    edges = np.diff(np.concatenate([pad, table, pad], axis=1).astype(np.int8), axis=1)
    qb, start = np.nonzero(edges == 1)
    _, stop = np.nonzero(edges == -1)
    slices = tuple(
        Slice(qi * b, min((qi + 1) * b, seqlen), k0 * b, min(k1 * b, seqlen), SliceType.FULL)
        for qi, k0, k1 in zip(qb.tolist(), start.tolist(), stop.tolist(), strict=True)
    )
    params = {
        "block": b,
        "density": cfg.density,
        "kept_blocks": kept_blocks(cfg.density, nb),
        "seed": cfg.seed,
    }
    return AttnMask(slices, seqlen, seqlen, name="block_sparse", params=params, tile=b)
