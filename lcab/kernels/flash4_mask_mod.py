"""FlashAttention-4 mask_mod functions (CuTe DSL), imported only on a GPU with flash-attn-4.

One function per interval count: row r sees keys in [lo_j[r], hi_j[r]) for j < K, the K
intervals being the mask's own per-row key intervals (AttnMask.row_intervals), passed as 2K
int32 aux tensors of one entry per query row. So every mask with at most K intervals per row
runs exactly, with no per-mask device code. Module-level functions: FA4 caches the compiled
kernel per function, and the row data are runtime tensors, so cells share compilations."""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from flash_attn.cute import utils


@cute.jit
def one_interval(batch, head, m_idx, n_idx, seqlen_info, aux_tensors):
    lo = utils.scalar_to_ssa(aux_tensors[0][m_idx[0]], cutlass.Int32)
    hi = utils.scalar_to_ssa(aux_tensors[1][m_idx[0]], cutlass.Int32)
    return (n_idx >= lo) & (n_idx < hi)


@cute.jit
def two_intervals(batch, head, m_idx, n_idx, seqlen_info, aux_tensors):
    lo0 = utils.scalar_to_ssa(aux_tensors[0][m_idx[0]], cutlass.Int32)
    hi0 = utils.scalar_to_ssa(aux_tensors[1][m_idx[0]], cutlass.Int32)
    lo1 = utils.scalar_to_ssa(aux_tensors[2][m_idx[0]], cutlass.Int32)
    hi1 = utils.scalar_to_ssa(aux_tensors[3][m_idx[0]], cutlass.Int32)
    return ((n_idx >= lo0) & (n_idx < hi0)) | ((n_idx >= lo1) & (n_idx < hi1))


BY_INTERVALS = {1: one_interval, 2: two_intervals}
