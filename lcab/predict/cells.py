"""Store rows as the model reads them: a kernel row (cp=none, one device) or a CP cell (real ranks
or cp.emulate), with its mask, candidate, shape, world, mode, device and measured time."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lcab.masks.slices import AttnMask
from lcab.predict.planonly import Candidate, build_mask, shape_spec
from lcab.results.store import read_rows

REPO = Path(__file__).resolve().parents[2]


def store_name(path: Path) -> str:
    """A store's name in calibration files: relative to the checkout when inside it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


@dataclass(frozen=True)
class Cell:
    store: str
    cell_id: str
    kernel: str
    strategy: str
    candidate: Candidate
    mask_values: tuple  # sorted (key, value) of the row's mask config
    seqlen: int
    world: int
    emulated: bool
    mode: str
    shape: tuple[int, int, int, int, str]  # batch, heads_q, heads_kv, head_dim, dtype
    device: str
    time_s: float
    mono_s: float | None  # cp.emulate rows: the monolithic kernel on the whole mask
    row: dict

    @property
    def key(self) -> str:
        return f"{self.store}#{self.cell_id}"

    def mask(self) -> AttnMask:
        return mask_of(self.mask_values, self.seqlen)

    def spec(self):
        return shape_spec(*self.shape)

    def label(self) -> str:
        c = self.candidate
        deg = (
            f"U{self.row['metrics'].get('cp_degrees', {}).get('ulysses', c.ulysses)}"
            if c.strategy == "usp"
            else ""
        )
        how = f"emu{self.world}" if self.emulated else f"w{self.world}"
        return f"{self.kernel} {c.strategy}{deg}({c.shard}) {self.mask_values_name} S={self.seqlen} {self.mode} {how}"

    @property
    def mask_values_name(self) -> str:
        return dict(self.mask_values)["name"]


@cache
def mask_of(values: tuple, seqlen: int) -> AttnMask:
    d = dict(values)
    return build_mask(d.pop("name"), seqlen, d)


def of_row(row: dict, store: str) -> Cell | None:
    """The row as a Cell, or None when it is not an ok row with a time."""
    if row.get("status") != "ok":
        return None
    c, m, env = row.get("config", {}), row.get("metrics", {}), row.get("env", {})
    t = m.get("time_ms_p50")
    if not t:
        return None
    cp = c.get("cp", {})
    emulate = int(cp.get("emulate") or 0)
    world = emulate or int(c.get("world") or 1)
    deg = m.get("cp_degrees") or {}
    cand = Candidate(
        strategy=cp.get("name", "none"),
        shard=m.get("shard") or cp.get("shard", "zigzag"),
        ulysses=int(deg.get("ulysses") or cp.get("ulysses_degree") or 0),
        ring=int(deg.get("ring") or cp.get("ring_degree") or 0),
        windows=int(deg.get("windows") or cp.get("windows") or 0),
    )
    mask = c.get("mask", {})
    sh = c.get("shape", {})
    return Cell(
        store=store,
        cell_id=row.get("cell_id", ""),
        kernel=c.get("kernel", {}).get("name", ""),
        strategy=cand.strategy,
        candidate=cand,
        mask_values=tuple(sorted((k, mask[k]) for k in mask)),
        seqlen=int(c.get("seqlen")),
        world=world,
        emulated=emulate > 0,
        mode=c.get("bench", {}).get("mode", "fwd"),
        shape=(int(sh["batch"]), int(sh["heads_q"]), int(sh["heads_kv"]), int(sh["head_dim"]), sh["dtype"]),
        device="cpu" if env.get("device_type") == "cpu" else env.get("device", ""),
        time_s=float(t) / 1e3,
        mono_s=float(m["mono_ms"]) / 1e3 if m.get("mono_ms") else None,
        row=row,
    )


def store_files(paths: list[str]) -> list[Path]:
    """Files, or every *.jsonl under a folder."""
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]
    return out


def read_cells(paths: list[str]) -> list[Cell]:
    """Every ok row of the stores, newest per (store, cell id)."""
    cells: dict[str, Cell] = {}
    for f in store_files(paths):
        for row in read_rows(f):
            cell = of_row(row, store_name(f))
            if cell is not None:
                cells[cell.key] = cell
    return list(cells.values())
