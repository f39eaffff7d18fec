"""Tile occupancy (the bound a tile-skipping kernel can reach on a mask) against the dense mask."""

import pytest
import torch

from lcab.config import MaskConfig, WindowMaskConfig, mask_config
from lcab.masks import build
from lcab.masks.registry import names
from lcab.masks.tiles import tile_counts, tile_occupancy, touched_tiles


def _dense_reference(mask, tile):
    d = mask.dense()
    sq, sk = d.shape
    pq, pk = -sq % tile, -sk % tile
    padded = torch.nn.functional.pad(d, (0, pk, 0, pq))
    tiles = padded.reshape((sq + pq) // tile, tile, (sk + pk) // tile, tile).any(dim=3).any(dim=1)
    rows = torch.full((tiles.shape[0],), tile)
    rows[-1] = sq - tile * (tiles.shape[0] - 1)
    cols = torch.full((tiles.shape[1],), tile)
    cols[-1] = sk - tile * (tiles.shape[1] - 1)
    pairs = (tiles * torch.outer(rows, cols)).sum().item()
    return int(tiles.sum()), d.sum().item() / pairs


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("seqlen,tile", [(1024, 128), (1000, 64)])
def test_tile_occupancy_matches_the_dense_mask(name, seqlen, tile):
    cfg = mask_config(dict(name=name, window=200, block=128, sparse_block=64))
    mask = build(cfg, seqlen)
    n_ref, occ_ref = _dense_reference(mask, tile)
    assert touched_tiles(mask, tile) == n_ref
    assert tile_occupancy(mask, tile) == pytest.approx(occ_ref, rel=1e-12)


def test_tile_occupancy_known_values():
    full = build(MaskConfig(name="full"), 1024)
    assert tile_occupancy(full) == 1.0
    causal = build(MaskConfig(name="causal"), 256)  # 3 of 4 tiles touched, 256*257/2 visible
    assert tile_occupancy(causal) == pytest.approx(256 * 257 / 2 / (3 * 128 * 128))
    # Causal window 1024 on 128-tiles: rows past the first window touch 9 tiles for 1024 keys.
    swc = build(WindowMaskConfig(name="sliding_window_causal", window=1024), 32768)
    assert tile_occupancy(swc) == pytest.approx(1024 / 1152, abs=0.01)


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("seqlen,tile", [(1000, 64), (777, 128)])
def test_tile_counts_match_the_dense_mask(name, seqlen, tile):
    mask = build(mask_config(dict(name=name, window=200, block=128, sparse_block=64)), seqlen)
    d = mask.dense().to(torch.int64)
    pad = -seqlen % tile
    padded = torch.nn.functional.pad(d, (0, pad, 0, pad))
    n = (seqlen + pad) // tile
    ref = padded.reshape(n, tile, n, tile).sum(dim=(1, 3))
    assert torch.equal(torch.from_numpy(tile_counts(mask, tile)), ref)


@pytest.mark.parametrize("name", ["causal", "sliding_window_causal", "causal_document"])
def test_rectangular_tiles_match_the_dense_mask(name):
    """64 x 128 (query x key) tiles, FlashAttention's SM90 backward tile at d128."""
    mask = build(mask_config(dict(name=name, window=200)), 1000)
    d = mask.dense()
    pad = torch.nn.functional.pad(d, (0, -1000 % 128, 0, -1000 % 64))
    touched = pad.reshape(pad.shape[0] // 64, 64, pad.shape[1] // 128, 128).any(dim=3).any(dim=1)
    rows = torch.tensor([64] * 15 + [1000 - 15 * 64])
    cols = torch.tensor([128] * 7 + [1000 - 7 * 128])
    pairs = int((touched * torch.outer(rows, cols)).sum())
    assert tile_occupancy(mask, 64, 128) == pytest.approx(d.sum().item() / pairs, rel=1e-12)
