"""The step kernel's time as a function of a call's shape and tile-level work, fitted on lcab's
own single-GPU kernel rows (cp=none).

    time(call) = c_call + c_tile * tile FLOPs + c_row * query elements

tile FLOPs = 4 x pairs in the touched 128x128 tiles x Hq x d x B (what a tile-skipping kernel
computes: partial tiles at document, window and diagonal edges cost whole tiles); a kernel that
takes a dense mask (sdpa_efficient / sdpa / sdpa_math / torch on a mask other than full or
causal) computes every pair of its box instead. query elements = rows x Hq x d x B (loading Q,
writing O and the LSE per row, whatever the row sees; a backward's programs run per key tile, so
for it the rows are the key buffer's); c_call is the per-call cost. Three
non-negative constants per (device, kernel, mode), by least squares on relative error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from lcab.masks.forms import full_or_causal
from lcab.masks.slices import AttnMask
from lcab.predict.planonly import TILE, _tile_rows

# Kernels that express a mask other than full/causal as a dense boolean mask (every pair computed).
DENSE = ("sdpa_efficient", "sdpa", "sdpa_math", "torch")
# Kernels whose CP steps are cut into (q chunk x k chunk) calls (their step forms: full/causal).
PAIR_CUT = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "flash2", "flash3")
MODES = ("fwd", "bwd")


@dataclass(frozen=True)
class CallWork:
    """What one or more kernel calls do: counts summed over the calls."""

    calls: float
    tile_pairs: float  # pairs in touched tiles (or the dense box for DENSE kernels on other masks)
    rows: float  # query rows over the calls

    def features(self, heads_q: int, head_dim: int, batch: int) -> np.ndarray:
        h = heads_q * head_dim * batch
        return np.array([self.calls, 4.0 * self.tile_pairs * h, self.rows * h], dtype=np.float64)


@dataclass
class KernelFit:
    device: str
    kernel: str
    mode: str
    coef: list[float]  # seconds per call, per tile FLOP, per query element
    cells: list[str] = field(default_factory=list)  # "store#cell_id[:field]" fitted on
    rel_rms: float = 0.0  # relative RMS error on the fitted cells

    def seconds(self, work: CallWork, heads_q: int, head_dim: int, batch: int) -> float:
        return float(np.dot(self.coef, work.features(heads_q, head_dim, batch)))

    def to_dict(self) -> dict:
        return asdict(self)


def mask_work(mask: AttnMask, kernel: str) -> CallWork:
    """One call of `kernel` on the whole mask (a kernel row)."""
    if kernel in DENSE and full_or_causal(mask) is None:
        return CallWork(1, float(mask.seqlen_q) * mask.seqlen_k, mask.seqlen_q)
    tl, th = _tile_rows(mask.row_intervals.lo, mask.row_intervals.hi)
    return CallWork(1, float((th - tl).clip(0).sum()) * TILE * TILE, mask.seqlen_q)


def fit(
    device: str, kernel: str, mode: str, samples: list[tuple[CallWork, tuple[int, int, int], float, str]]
) -> KernelFit:
    """samples: (work, (heads_q, head_dim, batch), seconds, cell) -> the three constants."""
    from scipy.optimize import nnls

    x = np.array([w.features(*s) for w, s, _, _ in samples])
    t = np.array([sec for _, _, sec, _ in samples])
    scale = x.max(axis=0)
    scale[scale == 0] = 1.0
    a = x / scale / t[:, None]  # relative error: each row divided by its own time
    coef, _ = nnls(a, np.ones(len(t)))
    coef = coef / scale
    rel = (x @ coef - t) / t
    return KernelFit(
        device,
        kernel,
        mode,
        [float(c) for c in coef],
        [c for *_, c in samples],
        float(np.sqrt(np.mean(rel**2))),
    )
