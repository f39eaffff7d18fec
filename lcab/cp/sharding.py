"""How the sequence is cut over CP ranks (cp.shard): contiguous, zigzag, doc_zigzag, balanced.

Every layout gives each rank a list of global token ranges in local order. Sequences (or
documents) whose length the chunk count does not divide are cut into chunks whose sizes
differ by at most one token; ranks whose token count ends up below the largest one get
trailing padding tokens, which no query sees and which see nothing. Both are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lcab.config import ConfigError
from lcab.cp.submask import Run, runs_from_ranges
from lcab.masks.slices import AttnMask

SHARDS = ("contiguous", "zigzag", "doc_zigzag", "balanced")


@dataclass
class Shard:
    name: str
    seqlen: int
    ranges: list[list[tuple[int, int]]]  # per rank, global [a, b) in local order
    local_len: int  # every rank's buffer length (tokens + trailing padding)
    notes: dict = field(default_factory=dict)

    @property
    def world(self) -> int:
        return len(self.ranges)

    def runs(self, rank: int, offset: int = 0) -> list[Run]:
        return [Run(r.g0, r.g1, r.l0 + offset) for r in runs_from_ranges(self.ranges[rank])]

    def tokens(self, rank: int) -> int:
        return sum(b - a for a, b in self.ranges[rank])

    def index(self, rank: int) -> np.ndarray:
        """Global token index per local position, -1 for padding."""
        idx = np.full(self.local_len, -1, dtype=np.int64)
        pos = 0
        for a, b in self.ranges[rank]:
            idx[pos : pos + b - a] = np.arange(a, b)
            pos += b - a
        return idx

    def row_area(self, mask: AttnMask, rank: int) -> int:
        """Visible (q, k) pairs of this rank's query rows against every key."""
        c = _row_cumsum(mask)
        return int(sum(c[b] - c[a] for a, b in self.ranges[rank]))


def _row_cumsum(mask: AttnMask) -> np.ndarray:
    ri = mask.row_intervals
    return np.r_[0, np.cumsum((ri.hi - ri.lo).sum(axis=1))]


def _chunks(start: int, length: int, n: int) -> list[tuple[int, int]]:
    """n near-equal chunks of [start, start + length) (sizes differ by at most 1; may be empty)."""
    sizes = [length // n + (1 if i < length % n else 0) for i in range(n)]
    out, pos = [], start
    for s in sizes:
        out.append((pos, pos + s))
        pos += s
    return out


def shard_from_ranges(name: str, seqlen: int, ranges: list[list[tuple[int, int]]], notes: dict) -> Shard:
    ranges = [[r for r in rs if r[1] > r[0]] for rs in ranges]
    counts = [sum(b - a for a, b in rs) for rs in ranges]
    local = max(counts)
    notes = {**notes, "pad_tokens": int(sum(local - c for c in counts)), "tokens_per_rank": counts}
    return Shard(name, seqlen, ranges, local, notes)


def contiguous(seqlen: int, world: int) -> Shard:
    ch = _chunks(0, seqlen, world)
    uneven = seqlen % world != 0
    return shard_from_ranges(
        "contiguous", seqlen, [[c] for c in ch], {"split": "uneven" if uneven else "even"}
    )


def zigzag(seqlen: int, world: int) -> Shard:
    """Megatron's layout: 2W chunks, rank r holds chunks r and 2W-1-r."""
    ch = _chunks(0, seqlen, 2 * world)
    uneven = seqlen % (2 * world) != 0
    ranges = [[ch[r], ch[2 * world - 1 - r]] for r in range(world)]
    return shard_from_ranges("zigzag", seqlen, ranges, {"split": "uneven" if uneven else "even"})


def doc_zigzag(mask: AttnMask, world: int) -> Shard:
    """Zigzag inside every document (TransformerEngine's THD layout for packed sequences)."""
    if not mask.doc_lens:
        sh = zigzag(mask.seqlen_q, world)
        sh.name = "doc_zigzag"
        sh.notes["split"] += "; mask has no documents: whole-sequence zigzag"
        return sh
    ranges: list[list[tuple[int, int]]] = [[] for _ in range(world)]
    pos, uneven = 0, 0
    for n in mask.doc_lens:
        ch = _chunks(pos, n, 2 * world)
        uneven += n % (2 * world) != 0
        for r in range(world):
            ranges[r] += [ch[r], ch[2 * world - 1 - r]]
        pos += n
    return shard_from_ranges(
        "doc_zigzag", mask.seqlen_q, ranges, {"split": f"uneven in {uneven}/{len(mask.doc_lens)} docs"}
    )


# Chunk counts per rank that `balanced` tries, fewest first: fewer chunks mean fewer, larger
# kernel calls per ring step, so more chunks are used only when they buy balance.
BALANCE_CHUNKS = (2, 4, 8)
BALANCE_TOLERANCE = 1.02


def balanced(mask: AttnMask, world: int) -> Shard:
    """The fewest equal chunks per rank (2, 4 or 8) that bring the per-rank area imbalance
    (max / mean) within 2%, else the most balanced of them. Chunks are placed greedily (largest
    area first, to the lightest rank) and keep sequence order per rank."""
    best = None
    for per in BALANCE_CHUNKS:
        shard = _balanced(mask, world, per)
        if best is None or shard.notes["imbalance"] < best.notes["imbalance"]:
            best = shard
        if shard.notes["imbalance"] <= BALANCE_TOLERANCE:
            return shard
    return best


def _balanced(mask: AttnMask, world: int, chunks_per_rank: int) -> Shard:
    s = mask.seqlen_q
    n = world * min(chunks_per_rank, max(1, s // (2 * world)))
    ch = _chunks(0, s, n)
    c = _row_cumsum(mask)
    area = np.array([c[b] - c[a] for a, b in ch], dtype=np.float64)
    load = np.zeros(world)
    count = np.zeros(world, dtype=np.int64)
    per = n // world
    owner = np.empty(n, dtype=np.int64)
    for i in np.argsort(-area, kind="stable"):
        free = np.nonzero(count < per)[0]
        r = free[np.argmin(load[free])]
        owner[i] = r
        load[r] += area[i]
        count[r] += 1
    ranges = [[ch[i] for i in range(n) if owner[i] == r] for r in range(world)]
    shard = shard_from_ranges("balanced", s, ranges, {"split": f"{n} chunks, {per} per rank"})
    shard.notes["imbalance"] = imbalance(list(load))
    return shard


def make_shard(name: str, mask: AttnMask, world: int) -> Shard:
    if mask.seqlen_q != mask.seqlen_k:
        raise ConfigError(f"CP needs a square mask, got {mask.seqlen_q}x{mask.seqlen_k}")
    if mask.seqlen_q < 2 * world:
        raise ConfigError(f"seqlen {mask.seqlen_q} is too short for {world} CP ranks (need >= {2 * world})")
    if name == "contiguous":
        return contiguous(mask.seqlen_q, world)
    if name == "zigzag":
        return zigzag(mask.seqlen_q, world)
    if name == "doc_zigzag":
        return doc_zigzag(mask, world)
    if name == "balanced":
        return balanced(mask, world)
    raise ConfigError(f"cp.shard '{name}' is not one of {', '.join(SHARDS)}")


def imbalance(areas: list[float]) -> float:
    """max / mean of per-rank areas (1.0 = perfectly balanced)."""
    mean = float(np.mean(areas))
    return float(np.max(areas)) / mean if mean > 0 else 1.0
