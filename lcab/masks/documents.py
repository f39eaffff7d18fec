"""Seeded document lengths packed to exactly S tokens, drawn from binned corpus tables.

Tables are package data (lcab/masks/data/<name>.csv, columns lo,hi,weight, bins inclusive,
'#' comment lines). A draw picks a bin by weight and a length uniformly inside it; with
probability long_doc_frac it instead draws uniformly from [long_min, long_max] (the paper's
"long" variants: 60% of docs from [8K, 30K]). Documents longer than max_doc_frac * S are
split into pieces of at most that length (so no one document dominates a CP shard), and the
last document is truncated so the lengths sum to exactly S.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lcab.config import BlockDocMaskConfig, DocMaskConfig

# Draws are made in fixed-size batches so a seed gives the same lengths however many are used.
_BATCH = 64
# Packing is a Python loop (a few us per document): past this many documents a mask is not a
# benchmark any kernel runs, and the loop would run for minutes before anything said so.
MAX_DOCS = 2**21


@dataclass(frozen=True)
class LengthTable:
    name: str
    lo: np.ndarray  # [bins] int64, inclusive
    hi: np.ndarray  # [bins] int64, inclusive
    weight: np.ndarray  # [bins] float64, sums to 1

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        b = rng.choice(len(self.weight), size=n, p=self.weight)
        return rng.integers(self.lo[b], self.hi[b] + 1)


def table_names() -> list[str]:
    data = resources.files("lcab.masks") / "data"
    return sorted(p.name[:-4] for p in data.iterdir() if p.name.endswith(".csv"))


@cache
def load_table(name: str) -> LengthTable:
    path = resources.files("lcab.masks") / "data" / f"{name}.csv"
    if not path.is_file():
        raise ValueError(f"unknown document-length table '{name}'; known: {', '.join(table_names())}")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows = list(csv.DictReader(lines))
    lo = np.array([int(r["lo"]) for r in rows], dtype=np.int64)
    hi = np.array([int(r["hi"]) for r in rows], dtype=np.int64)
    w = np.array([float(r["weight"]) for r in rows], dtype=np.float64)
    if len(rows) == 0 or np.any(lo < 1) or np.any(hi < lo) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"document-length table '{name}' is malformed (need 1 <= lo <= hi, weight >= 0)")
    return LengthTable(name, lo, hi, w / w.sum())


def draw_lengths(
    rng: np.random.Generator,
    n: int,
    table: LengthTable,
    long_doc_frac: float = 0.0,
    long_min: int = 8192,
    long_max: int = 30720,
) -> np.ndarray:
    """n raw document lengths (before splitting and packing)."""
    is_long = rng.random(n) < long_doc_frac
    short = table.draw(rng, n)
    if long_doc_frac <= 0:
        return short
    long = rng.integers(long_min, long_max + 1, size=n)
    return np.where(is_long, long, short)


def max_doc_len(cfg: DocMaskConfig, seqlen: int) -> int:
    return max(1, int(np.floor(cfg.max_doc_frac * seqlen)))


def sample_doc_lens(cfg: DocMaskConfig, seqlen: int) -> tuple[int, ...]:
    """Document lengths summing to exactly seqlen; a pure function of (cfg, seqlen)."""
    if seqlen < 1:
        raise ValueError(f"seqlen must be >= 1, got {seqlen}")
    if not 0.0 <= cfg.long_doc_frac <= 1.0:
        raise ValueError(f"long_doc_frac must be in [0, 1], got {cfg.long_doc_frac}")
    if cfg.long_doc_frac > 0 and not 1 <= cfg.long_min <= cfg.long_max:
        raise ValueError(f"need 1 <= long_min <= long_max, got {cfg.long_min}, {cfg.long_max}")
    if not 0.0 < cfg.max_doc_frac <= 1.0:  # <= 0 would split every document into 1-token pieces
        raise ValueError(f"max_doc_frac must be in (0, 1], got {cfg.max_doc_frac}")
    table = load_table(cfg.doc_table)
    cap = max_doc_len(cfg, seqlen)
    rng = np.random.default_rng(cfg.seed)
    out: list[int] = []
    total = 0
    while total < seqlen:
        _check_count(len(out), seqlen)
        for n in draw_lengths(rng, _BATCH, table, cfg.long_doc_frac, cfg.long_min, cfg.long_max).tolist():
            while n > 0 and total < seqlen:
                piece = min(n, cap, seqlen - total)
                out.append(piece)
                total += piece
                n -= piece
            if total == seqlen:
                break
    return tuple(out)


def sample_block_docs(cfg: BlockDocMaskConfig, seqlen: int) -> tuple[int, ...]:
    """block_causal_document's documents: 1..max_blocks_per_doc whole blocks each, packed to S."""
    if cfg.block < 1 or cfg.max_blocks_per_doc < 1:
        raise ValueError(
            f"block and max_blocks_per_doc must be >= 1, got {cfg.block}, {cfg.max_blocks_per_doc}"
        )
    rng = np.random.default_rng(cfg.seed)
    out: list[int] = []
    total = 0
    while total < seqlen:
        _check_count(len(out), seqlen)
        for nb in rng.integers(1, cfg.max_blocks_per_doc + 1, size=_BATCH).tolist():
            piece = min(nb * cfg.block, seqlen - total)
            out.append(piece)
            total += piece
            if total == seqlen:
                break
    return tuple(out)


def _check_count(n_docs: int, seqlen: int) -> None:
    if n_docs > MAX_DOCS:
        raise ValueError(
            f"more than {MAX_DOCS} documents in {seqlen} tokens: use a shorter seqlen or longer documents"
        )


def doc_params(cfg: DocMaskConfig) -> dict:
    """The parameters that decide the documents, for the record."""
    p = {"seed": cfg.seed, "doc_table": cfg.doc_table, "max_doc_frac": cfg.max_doc_frac}
    if cfg.long_doc_frac > 0:
        p.update(long_doc_frac=cfg.long_doc_frac, long_min=cfg.long_min, long_max=cfg.long_max)
    return p
