"""A CP cell's plan without tensors or processes: per ring member and step, the visible area, the
tile-level work and the kernel calls; per rank, the messages by kind and their order. Any world
up to 1024 in seconds: the global mask's row intervals are reduced once per shard chunk against
every chunk edge (a sorted sum of clipped intervals), so nothing is quadratic in tokens.

It follows the strategies' own code (lcab.cp.rings, double_ring, ulysses, ring_allgather): step
t of ring member i uses the block of member order[i][t]; message kinds and sizes are those Comm
counts when the strategy runs (tests/test_predict_plan.py compares them with real gloo runs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from lcab.config import ConfigError
from lcab.cp import registry
from lcab.cp.base import Degrees, Topology
from lcab.cp.merge import acc_dtype
from lcab.cp.sharding import Shard, make_shard
from lcab.kernels.base import DTYPE_NAMES, ShapeSpec
from lcab.masks.slices import AttnMask

TILE = 128  # the tile edge flash-style kernels compute in (lcab.masks.tiles)
STRATEGIES = ("ulysses", "ring", "ring_allgather", "usp", "double_ring")
RING_FAMILY = ("ring", "usp", "double_ring")
# The plan-only path refuses layouts whose chunk count would make it slow (doc_zigzag at scale).
MAX_SEGMENTS = 16384


@dataclass(frozen=True)
class Candidate:
    """One way to run a cell: strategy, shard and degrees (0 = the rest of the world)."""

    strategy: str
    shard: str = "zigzag"
    ulysses: int = 0
    ring: int = 0
    windows: int = 0

    def cp(self) -> dict:
        d: dict = {"name": self.strategy, "shard": self.shard}
        if self.strategy in ("ulysses", "usp", "double_ring"):
            d["ulysses_degree"] = self.ulysses
        if self.strategy != "ulysses":
            d["ring_degree"] = self.ring
        if self.strategy == "double_ring":
            d["windows"] = self.windows
        return d


@dataclass(frozen=True)
class Message:
    """A kind of call one rank makes per step call: Comm's kind name, its collective, the mesh
    dimension it runs on, bytes this rank sends per call, and calls."""

    kind: str
    op: str  # p2p | all_to_all | all_gather | reduce_scatter
    dim: str  # uly | ring | inner | outer
    nbytes: float
    calls: int
    phase: str  # fwd | bwd


@dataclass
class CellPlan:
    strategy: str
    shard: str
    deg: Degrees
    world: int
    seqlen: int
    mask_name: str
    shape: ShapeSpec  # the global shape (heads before the Ulysses split)
    heads_q: int  # per rank, after the Ulysses split
    heads_kv: int
    local_len: int  # tokens in a rank's buffer (with padding)
    q_rows: int  # rows of the query buffer one step call sees
    order: np.ndarray  # [ring members, steps] source member of each step's block
    area: np.ndarray  # [ring members, steps] visible (q, k) pairs (per head)
    tiles: np.ndarray  # [ring members, steps] pairs in touched TILE x TILE tiles
    calls: np.ndarray  # [ring members, steps] kernel calls (pair-cut kernels: one per chunk pair)
    pair_calls: np.ndarray  # same, counted as (q chunk x k chunk) pairs
    rows: np.ndarray  # [ring members, steps] query rows of the chunks the step reaches (merge work)
    q_chunks: int  # chunks in one step call's query buffer
    k_rows: int  # rows of the key buffer one step call sees
    messages: list[Message] = field(default_factory=list)
    mask_area: int = 0
    rank_area: list[float] = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    @property
    def members(self) -> int:
        return self.order.shape[0]

    def bytes_by_kind(self, mode: str) -> dict[str, float]:
        """Bytes one rank sends per step call in `mode`, by Comm's kind (as rows record them)."""
        phases = {"fwd": ("fwd",), "bwd": ("bwd",), "fwd_bwd": ("fwd", "bwd")}[mode]
        out: Counter = Counter()
        for m in self.messages:
            if m.phase in phases and m.calls:
                out[m.kind] += m.nbytes * m.calls
        return dict(out)

    def bytes_sent(self, mode: str) -> float:
        return float(sum(self.bytes_by_kind(mode).values()))


def shape_spec(batch: int, heads_q: int, heads_kv: int, head_dim: int, dtype: str) -> ShapeSpec:
    if dtype not in DTYPE_NAMES:
        raise ConfigError(f"shape dtype '{dtype}' is not one of {', '.join(DTYPE_NAMES)}")
    return ShapeSpec(batch, heads_q, heads_kv, head_dim, DTYPE_NAMES[dtype], torch.device("cpu"))


def degrees(cand: Candidate, shape: ShapeSpec, world: int) -> Degrees:
    """The strategy's own degree rules and head checks (ConfigError / Unsupported as lcab.run)."""
    if cand.strategy not in STRATEGIES:
        raise ConfigError(f"lcab.predict models cp={cand.strategy}? it models {', '.join(STRATEGIES)}")
    return registry.get(cand.strategy).check(cand.cp(), shape, world)


def plan_cell(mask: AttnMask, cand: Candidate, shape: ShapeSpec, world: int) -> CellPlan:
    deg = degrees(cand, shape, world)
    shard = _shard(cand.shard, mask, world)
    nseg = sum(len(r) for r in shard.ranges)
    if nseg > MAX_SEGMENTS:
        raise ConfigError(
            f"cp.shard={cand.shard} cuts {nseg} chunks at world {world}: too many for the plan-only path"
        )
    topo = Topology(world=world, rank=0, deg=deg, intra=True)
    u, r = deg.ulysses, deg.ring
    if cand.strategy == "ring_allgather":
        groups = np.arange(world)  # each rank its own queries, against every key
        order = np.zeros((world, 1), dtype=np.int64)
        k_groups = np.zeros(world, dtype=np.int64)
        n_k = 1
    else:
        groups = np.array([topo.coords(k)[0] for k in range(world)])
        order = _orders(cand.strategy, deg)
        k_groups, n_k = groups, r
    n_q = world if cand.strategy == "ring_allgather" else r
    area, tiles, pairs, rows = member_matrices(mask, shard, groups, n_q, k_groups, n_k)
    take = np.take_along_axis
    a, t, p, touched = (take(m, order, axis=1) for m in (area, tiles, pairs, rows))
    whole_calls = (a > 0).astype(np.int64)
    hq, hkv = shape.heads_q // u, shape.heads_kv * deg.kv_replicas // u
    local = shard.local_len
    if cand.strategy == "ring_allgather":
        rank_area = [float(a[k].sum()) for k in range(world)]
    else:
        rank_area = [float(a[groups[k]].sum()) / u for k in range(world)]
    return CellPlan(
        strategy=cand.strategy,
        shard=shard.name,
        deg=deg,
        world=world,
        seqlen=mask.seqlen_q,
        mask_name=mask.name,
        shape=shape,
        heads_q=hq,
        heads_kv=hkv,
        local_len=local,
        q_rows=local * u,
        order=order,
        area=a,
        tiles=t,
        calls=whole_calls,
        pair_calls=p,
        rows=touched,
        q_chunks=max(1, max(len(rs) for rs in shard.ranges))
        * (1 if cand.strategy == "ring_allgather" else u),
        k_rows=mask.seqlen_k if cand.strategy in ("ring_allgather", "ulysses") else local * u,
        messages=messages(cand.strategy, deg, shape, local),
        mask_area=int(mask.area),
        rank_area=rank_area,
        notes={"shard": shard.notes.get("split", ""), "pad_tokens": shard.notes.get("pad_tokens", 0)},
    )


_SHARDS: dict[tuple, tuple[AttnMask, Shard]] = {}


def _shard(name: str, mask: AttnMask, world: int) -> Shard:
    """make_shard, kept for the last few masks (a recommendation asks for one shard many times;
    `balanced` at 1024 ranks takes seconds)."""
    key = (name, id(mask), world)
    hit = _SHARDS.get(key)
    if hit is None or hit[0] is not mask:
        if len(_SHARDS) > 32:
            _SHARDS.clear()
        hit = _SHARDS[key] = (mask, make_shard(name, mask, world))
    return hit[1]


def _orders(strategy: str, deg: Degrees) -> np.ndarray:
    """[R, R] block source per ring member and step: (i - t) mod R on a ring; LoongTrain's
    (window - o, position - t) on a double ring (lcab.cp.strategies.double_ring)."""
    r = deg.ring
    i = np.arange(r)[:, None]
    if strategy != "double_ring" or deg.windows <= 1:
        return (i - np.arange(r)[None, :]) % r
    nw, ws = deg.windows, r // deg.windows
    w, j = i // ws, i % ws
    o, t = np.divmod(np.arange(r)[None, :], ws)
    return ((w - o) % nw) * ws + (j - t) % ws


def member_matrices(
    mask: AttnMask, shard: Shard, groups: np.ndarray, n_q: int, k_groups: np.ndarray, n_k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n_q, n_k] visible pairs, tile-level pairs, (q chunk, k chunk) pairs with something
    visible, and query rows of the chunks that see something, between query groups (rank ->
    groups[rank]) and key groups (k_groups)."""
    segs = sorted((a, b, rank) for rank, rs in enumerate(shard.ranges) for a, b in rs if b > a)
    edges = np.array([s[0] for s in segs] + [segs[-1][1]], dtype=np.float64)
    owner_q = np.array([groups[s[2]] for s in segs])
    owner_k = np.array([k_groups[s[2]] for s in segs])
    ri = mask.row_intervals
    lo, hi = ri.lo, ri.hi
    area = np.zeros((n_q, n_k))
    pairs = np.zeros((n_q, n_k))
    rows = np.zeros((n_q, n_k))
    for s, (a, b, _) in enumerate(segs):
        d = _row_block(lo[a:b], hi[a:b], edges)
        if d is None:
            continue
        area[owner_q[s]] += np.bincount(owner_k, weights=d, minlength=n_k)
        seen = np.bincount(owner_k, weights=(d > 0).astype(float), minlength=n_k)
        pairs[owner_q[s]] += seen
        rows[owner_q[s]] += (b - a) * (seen > 0)
    tlo, thi = _tile_rows(lo, hi)
    tiles = np.zeros((n_q, n_k))
    tedges = edges / TILE
    for s, (a, b, _) in enumerate(segs):
        d = _row_block(tlo[a // TILE : -(-b // TILE)], thi[a // TILE : -(-b // TILE)], tedges)
        if d is not None:
            tiles[owner_q[s]] += np.bincount(owner_k, weights=d * TILE * TILE, minlength=n_k)
    return area, tiles, pairs, rows


def _row_block(lo: np.ndarray, hi: np.ndarray, edges: np.ndarray) -> np.ndarray | None:
    """Visible pairs of these rows in each [edges[e], edges[e+1]): with F(x) = sum over row
    intervals of |[lo, hi) & [0, x)| = sum(max(x, lo)) + sum(min(x, hi)) - n x - sum(lo), each
    sum read off the sorted ends, F at every edge costs a sort and two searchsorted."""
    keep = hi > lo
    starts, ends = lo[keep].astype(np.float64), hi[keep].astype(np.float64)
    n = starts.size
    if n == 0:
        return None
    starts.sort()
    ends.sort()
    cl, ch = np.r_[0.0, np.cumsum(starts)], np.r_[0.0, np.cumsum(ends)]
    k1 = np.searchsorted(starts, edges, "right")
    k2 = np.searchsorted(ends, edges, "left")
    f = edges * k1 + (cl[-1] - cl[k1]) + ch[k2] + edges * (n - k2) - n * edges - cl[-1]
    return np.diff(f)


def _tile_rows(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per TILE rows, per interval column: the key tiles [floor(min lo), ceil(max hi)) touched
    (a tile row's rows see one contiguous run of key tiles for every lcab pattern but sparse ones)."""
    s, j = lo.shape
    pad = -s % TILE
    empty = hi <= lo
    big = np.iinfo(np.int64).max
    lo_ = np.where(empty, big, lo)
    hi_ = np.where(empty, -1, hi)
    if pad:
        lo_ = np.r_[lo_, np.full((pad, j), big)]
        hi_ = np.r_[hi_, np.full((pad, j), -1)]
    tl = lo_.reshape(-1, TILE, j).min(axis=1)
    th = hi_.reshape(-1, TILE, j).max(axis=1)
    none = th < 0
    return np.where(none, 0, tl // TILE), np.where(none, 0, -(-th // TILE))


def kv_bytes(deg: Degrees, shape: ShapeSpec, local: int) -> tuple[float, float]:
    """(K and V of one rank's block, its q) in bytes; after the all-to-all a rank's K/V buffer
    (U x L tokens, Hkv x replicas / U heads) has the bytes of its local K/V."""
    el = shape.dtype.itemsize
    kv = 2 * shape.batch * local * shape.heads_kv * deg.kv_replicas * shape.head_dim * el
    return float(kv), float(shape.batch * local * shape.heads_q * shape.head_dim * el)


def messages(strategy: str, deg: Degrees, shape: ShapeSpec, local: int) -> list[Message]:
    """Per rank and step call, as the strategies' code calls Comm (kinds as Comm names them).
    dK/dV travel in the accumulation dtype (lcab.cp.merge.acc_dtype: fp32 for bf16/fp16, fp64
    for fp32/fp64)."""
    el = shape.dtype.itemsize
    acc = acc_bytes(el)
    kv, q = kv_bytes(deg, shape, local)
    dkv = kv * acc / el
    u, r = deg.ulysses, deg.ring
    out: list[Message] = []
    if u > 1:
        kvh = kv / 2
        out += [
            Message("a2a_q", "all_to_all", "uly", _a2a(q, u), 1, "fwd"),
            Message("a2a_k", "all_to_all", "uly", _a2a(kvh, u), 1, "fwd"),
            Message("a2a_v", "all_to_all", "uly", _a2a(kvh, u), 1, "fwd"),
            Message("a2a_out", "all_to_all", "uly", _a2a(q, u), 1, "fwd"),
            Message("a2a_out_bwd", "all_to_all", "uly", _a2a(q, u), 1, "bwd"),
            Message("a2a_q_bwd", "all_to_all", "uly", _a2a(q, u), 1, "bwd"),
            Message("a2a_k_bwd", "all_to_all", "uly", _a2a(kvh, u), 1, "bwd"),
            Message("a2a_v_bwd", "all_to_all", "uly", _a2a(kvh, u), 1, "bwd"),
        ]
    if strategy == "ring_allgather":
        return [
            *out,
            Message("allgather_kv", "all_gather", "ring", kv * (r - 1), 1, "fwd"),
            Message("reduce_scatter_dkv", "reduce_scatter", "ring", _rs(dkv * r, r), 1, "bwd"),
        ]
    if strategy == "ulysses" or r == 1:
        return out
    if strategy == "double_ring" and deg.windows > 1:
        nw, ws = deg.windows, r // deg.windows
        return [
            *out,
            Message("outer_kv", "p2p", "outer", kv, nw - 1, "fwd"),
            Message("inner_kv", "p2p", "inner", kv, nw * (ws - 1), "fwd"),
            Message("outer_kv_bwd", "p2p", "outer", kv, nw - 1, "bwd"),
            Message("inner_kv_bwd", "p2p", "inner", kv, nw * (ws - 1), "bwd"),
            Message("inner_dkv", "p2p", "inner", dkv, nw * ws if ws > 1 else 0, "bwd"),
            Message("outer_dkv", "p2p", "outer", dkv, nw, "bwd"),
        ]
    return [
        *out,
        Message("ring_kv", "p2p", "ring", kv, r - 1, "fwd"),
        Message("ring_kv_bwd", "p2p", "ring", kv, r - 1, "bwd"),
        Message("ring_dkv", "p2p", "ring", dkv, r, "bwd"),
    ]


def acc_bytes(itemsize: int) -> int:
    """Bytes per element of lcab's merge accumulator for inputs of `itemsize` (lcab.cp.merge)."""
    return acc_dtype({2: torch.bfloat16, 4: torch.float32, 8: torch.float64}[itemsize]).itemsize


def _a2a(nbytes: float, u: int) -> float:
    return float(int(nbytes) * (u - 1) // u)  # Comm: nbytes(inp) * (w - 1) // w


def _rs(nbytes: float, w: int) -> float:
    return float(int(nbytes) * (w - 1) // w)


def build_mask(name: str, seqlen: int, params: dict | None = None) -> AttnMask:
    """A mask as lcab.run builds it: the option file's values (lcab/conf/mask/<name>.yaml), a
    row's values on top, through the pattern's schema."""
    from omegaconf import OmegaConf

    from lcab.compose import CONF_DIR
    from lcab.config import mask_config
    from lcab.masks import registry as masks

    path = CONF_DIR / "mask" / f"{name}.yaml"
    if not path.is_file():
        opts = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"mask={name} is not one of {', '.join(opts)}")
    values = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(path)).items() if k != "defaults"}
    return masks.build(mask_config({**values, **(params or {})}), seqlen)
