"""Arguments for kernels that take masks as packed documents plus a window (flash-attn 2/3, cuDNN).

Everything a GPU adapter hands to its library (cu_seqlens, window sizes, cuDNN ragged offsets,
sequence-length tensors, diagonal-band bounds, THD packing, LSE layouts) is built by the plain
functions here, so each number is unit-tested on CPU; the adapters only call the libraries.

The two window conventions, inside one document, query i and key j at local positions:
  flash-attn  window_size=(left, right), -1 = unbounded: i - left <= j <= i + right;
              causal=True caps right at 0.
  cuDNN       diagonal band, TOP_LEFT alignment: diagonal_band_left_bound L hides j <= i - L,
              diagonal_band_right_bound R hides j > i + R; None = no bound (0 = causal).
So flash left w-1 is cuDNN left bound w, and flash right is cuDNN right bound. Documents are
square (q and k share one cu_seqlens), so TOP_LEFT and BOTTOM_RIGHT alignment coincide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lcab.kernels.base import Unsupported
from lcab.masks.slices import AttnMask


def batched_doc_lens(doc_lens: Sequence[int], batch: int) -> tuple[int, ...]:
    """Every batch row holds the same documents; packed, the rows follow one another."""
    return tuple(int(n) for n in doc_lens) * batch


def cu_seqlens(doc_lens: Sequence[int]) -> list[int]:
    """Exclusive prefix sum with the total at the end: [3, 5, 2] -> [0, 3, 8, 10]."""
    out = [0]
    for n in doc_lens:
        if n <= 0:
            raise ValueError(f"document lengths must be positive, got {list(doc_lens)}")
        out.append(out[-1] + int(n))
    return out


def cu_seqlens_tensor(doc_lens: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """flash-attn's cu_seqlens: int32 [n_docs + 1]."""
    return torch.tensor(cu_seqlens(doc_lens), dtype=torch.int32, device=device)


def flash_window(causal: bool, window_left: int, window_right: int) -> tuple[bool, tuple[int, int]]:
    """(causal, window_size) for flash_attn_*func; the right side is 0 whenever causal."""
    left = -1 if window_left < 0 else int(window_left)
    right = -1 if window_right < 0 else int(window_right)
    if causal:
        right = 0
    return bool(causal), (left, right)


def cudnn_band(causal: bool, window_left: int, window_right: int) -> tuple[int | None, int | None]:
    """(diagonal_band_left_bound, diagonal_band_right_bound) for cuDNN's sdpa, TOP_LEFT aligned."""
    _, (left, right) = flash_window(causal, window_left, window_right)
    left_bound = None if left < 0 else left + 1
    right_bound = None if right < 0 else right
    return left_bound, right_bound


def ragged_offsets(
    doc_lens: Sequence[int],
    heads: int,
    head_dim: int,
    dtype: torch.dtype = torch.int64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """cuDNN ragged offsets of a packed [T, H, D] tensor: cu_seqlens * H * D elements, [n + 1, 1, 1, 1]."""
    cu = torch.tensor(cu_seqlens(doc_lens), dtype=torch.int64) * (heads * head_dim)
    return cu.to(dtype).view(-1, 1, 1, 1).to(device)


def seq_lens_tensor(doc_lens: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """cuDNN seq_len_q / seq_len_kv: int32 [n_docs, 1, 1, 1]."""
    return torch.tensor([int(n) for n in doc_lens], dtype=torch.int32, device=device).view(-1, 1, 1, 1)


def bshd_dims(batch: int, seqlen: int, heads: int, head_dim: int) -> tuple[list[int], list[int]]:
    """cuDNN (dims, strides) in its B, H, S, D order for lcab's contiguous [B, S, H, D] tensors."""
    return [batch, heads, seqlen, head_dim], [seqlen * heads * head_dim, head_dim, heads * head_dim, 1]


def thd_dims(n_seqs: int, heads: int, max_seqlen: int, head_dim: int) -> tuple[list[int], list[int]]:
    """cuDNN (dims, strides) of a ragged tensor: B = sequences, S = the longest one; the ragged
    offsets, not the batch stride, place each sequence in the packed [T, H, D] buffer."""
    return bshd_dims(n_seqs, max_seqlen, heads, head_dim)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def to_thd(x: torch.Tensor) -> torch.Tensor:
    """[B, S, H, D] -> packed [B*S, H, D]: a view; documents repeat per batch row."""
    b, s, h, d = x.shape
    return x.reshape(b * s, h, d)


def from_thd(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Packed [B*S, H, D] -> [B, S, H, D]: a view."""
    t, h, d = x.shape
    return x.view(batch, t // batch, h, d)


def lse_from_packed(lse: torch.Tensor, batch: int) -> torch.Tensor:
    """flash-attn varlen LSE [H, B*S] -> lcab's [B, H, S]."""
    h, t = lse.shape
    return lse.view(h, batch, t // batch).transpose(0, 1)


def padded_positions(
    doc_lens: Sequence[int], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each packed token, (sequence index, position in the sequence): where a per-sequence
    padded tensor [n_seqs, H, max_seqlen] holds that token's value."""
    lens = torch.tensor([int(n) for n in doc_lens], dtype=torch.int64)
    seq = torch.repeat_interleave(torch.arange(len(lens)), lens)
    starts = torch.tensor(cu_seqlens(doc_lens)[:-1], dtype=torch.int64)
    pos = torch.arange(int(lens.sum())) - starts[seq]
    return seq.to(device), pos.to(device)


def lse_from_padded(stats: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-sequence padded LSE [n_seqs, H, max_seqlen(, 1)] (cuDNN stats, old flash varlen) ->
    [B, H, S] by the index pair from padded_positions()."""
    if stats.dim() == 4:
        stats = stats.squeeze(-1)
    packed = stats[seq, :, pos]  # [T, H]
    t, h = packed.shape
    return packed.view(batch, t // batch, h).permute(0, 2, 1)


# Reference semantics: the documented visibility rule of each library, expanded to a dense mask,
# so the tests can check that the arguments above reproduce AttnMask.dense() exactly.


def _block_diagonal(doc_lens: Sequence[int], visible_in_doc) -> torch.Tensor:
    total = sum(doc_lens)
    out = torch.zeros(total, total, dtype=torch.bool)
    for a, b in zip(cu_seqlens(doc_lens)[:-1], cu_seqlens(doc_lens)[1:], strict=True):
        i = torch.arange(b - a)[:, None]
        j = torch.arange(b - a)[None, :]
        out[a:b, a:b] = visible_in_doc(i, j)
    return out


def flash_visible(doc_lens: Sequence[int], causal: bool, window_size: tuple[int, int]) -> torch.Tensor:
    left, right = window_size
    if causal:
        right = 0 if right < 0 else min(right, 0)

    def rule(i, j):
        keep = torch.ones_like(i == j)
        if left >= 0:
            keep = keep & (j >= i - left)
        if right >= 0:
            keep = keep & (j <= i + right)
        return keep

    return _block_diagonal(doc_lens, rule)


def cudnn_visible(doc_lens: Sequence[int], left_bound: int | None, right_bound: int | None) -> torch.Tensor:
    def rule(i, j):
        keep = torch.ones_like(i == j)
        if left_bound is not None:
            keep = keep & ~(j <= i - left_bound)
        if right_bound is not None:
            keep = keep & ~(j > i + right_bound)
        return keep

    return _block_diagonal(doc_lens, rule)


def express(kernel: str, mask: AttnMask):
    """The mask as one VarlenForm (packed documents + causal flag + window), or Unsupported.

    Pure and CPU-only, so every mask's expressibility is decided (and tested) without the
    kernel's package or a GPU. Full and causal come back as one document covering the sequence.
    """
    from lcab.masks.forms import varlen_form, why_not_varlen

    form = varlen_form(mask)
    if form is None:
        raise Unsupported(f"{kernel} cannot express {mask.name}: {why_not_varlen(mask)}")
    return form


# --- cuDNN on CP step sub-masks ----------------------------------------------------------------
# A CP step's sub-mask is rectangular and, for document masks, block diagonal with q and k pieces
# of different lengths and offsets (zigzag halves of each document). cuDNN's ragged layout takes
# separate offsets and seq_len tensors for Q and K/V, and one diagonal band applied inside every
# sequence, aligned at its top-left or bottom-right corner (cuDNN's diagonal_alignment), so such
# a sub-mask is one call when every block follows the same band; else the caller cuts it smaller.


@dataclass(frozen=True)
class CudnnLayout:
    """One cuDNN SDPA call over a seqlen_q x seqlen_k mask (per batch row): sequence i is query
    rows [q_starts[i], + q_lens[i]) against keys [k_starts[i], + k_lens[i]); inside it, with local
    row r, key c and shift s = k_len - q_len if bottom_right else 0, key c is visible iff
    c > r + s - left_bound (when set) and c <= r + s + right_bound (when set). Rows and keys in no
    sequence see and are seen by nothing."""

    seqlen_q: int
    seqlen_k: int
    q_starts: tuple[int, ...]
    q_lens: tuple[int, ...]
    k_starts: tuple[int, ...]
    k_lens: tuple[int, ...]
    left_bound: int | None = None
    right_bound: int | None = None
    bottom_right: bool = False

    @property
    def ragged(self) -> bool:
        """Anything but one sequence covering the whole buffer needs offsets and seq_len tensors."""
        whole = ((0,), (self.seqlen_q,), (0,), (self.seqlen_k,))
        return (self.q_starts, self.q_lens, self.k_starts, self.k_lens) != whole

    def describe(self) -> str:
        if (self.left_bound, self.right_bound) == (None, None):
            band = "full"
        elif self.left_bound is None and self.right_bound == 0:
            band = "causal_bottom_right" if self.bottom_right else "causal"
        else:
            align = "bottom_right" if self.bottom_right else "top_left"
            band = f"band(left={self.left_bound}, right={self.right_bound}, {align})"
        return f"{'ragged_thd' if self.ragged else 'bshd'}+{band}"


def layout_from_form(form) -> CudnnLayout:
    """prepare()'s case: square documents (q pieces = k pieces), top-left band from the window."""
    starts, lens = tuple(int(x) for x in form.cu_seqlens[:-1]), form.doc_lens
    left, right = cudnn_band(form.causal, form.window_left, form.window_right)
    return CudnnLayout(form.seqlen, form.seqlen, starts, lens, starts, lens, left, right)


def _blocks(mask: AttnMask) -> list[tuple[int, int, int, int, np.ndarray, np.ndarray]]:
    """The finest block-diagonal cut of the non-empty rows: (r0, r1, k0, k1, lo, hi), lo/hi the
    rows' key ranges relative to k0. Raises Unsupported where no such cut exists."""
    ri = mask.row_intervals
    if ri.max_intervals > 1 and (ri.hi[:, 1:] > ri.lo[:, 1:]).any():
        r = int(np.nonzero((ri.hi[:, 1:] > ri.lo[:, 1:]).any(axis=1))[0][0])
        raise Unsupported(f"row {r} sees {int((ri.hi[r] > ri.lo[r]).sum())} disjoint key ranges")
    lo, hi = ri.lo[:, 0], ri.hi[:, 0]
    rows = np.nonzero(hi > lo)[0]
    if rows.size == 0:
        raise Unsupported("no query row sees a key")
    lo, hi = lo[rows], hi[rows]
    # A block ends before row t iff every key seen so far precedes every key seen from t on.
    cut = np.nonzero(np.maximum.accumulate(hi)[:-1] <= np.minimum.accumulate(lo[::-1])[::-1][1:])[0] + 1
    out = []
    for a, b in zip(np.r_[0, cut], np.r_[cut, rows.size], strict=True):
        r0, r1 = int(rows[a]), int(rows[b - 1]) + 1
        if r1 - r0 != b - a:
            raise Unsupported(f"rows {r0}..{r1 - 1} share keys but some of them see nothing")
        k0, k1 = int(lo[a:b].min()), int(hi[a:b].max())
        out.append((r0, r1, k0, k1, lo[a:b] - k0, hi[a:b] - k0))
    return out


def _band_of(m: int, n: int, lo: np.ndarray, hi: np.ndarray, bottom_right: bool):
    """(left_bound, right_bound) that one block's first bounded rows imply, or None if invalid."""
    s = n - m if bottom_right else 0
    i = np.arange(m)
    left = right = None
    if (lo > 0).any():
        t = int(np.argmax(lo > 0))
        left = int(i[t] + s - lo[t] + 1)
        if left < 1:
            return None
    if (hi < n).any():
        t = int(np.argmax(hi < n))
        right = int(hi[t] - 1 - i[t] - s)
        if right < 0:
            return None
    return left, right


def band_rows(m: int, n: int, left: int | None, right: int | None, bottom_right: bool):
    """The key range [lo, hi) of each of m rows under cuDNN's band in an m x n sequence."""
    s = n - m if bottom_right else 0
    i = np.arange(m)
    lo = np.zeros(m, dtype=np.int64) if left is None else np.clip(i + s - left + 1, 0, n)
    hi = np.full(m, n, dtype=np.int64) if right is None else np.clip(i + s + right + 1, 0, n)
    return lo, np.maximum(lo, hi)


def _one_band(mask: AttnMask, cands, who: str) -> CudnnLayout:
    """The sub-mask as one call whose every block follows one band, trying `cands(dims, blocks)`
    (left_bound, right_bound, bottom_right) in order; Unsupported saying why if none fits."""
    blocks = _blocks(mask)
    dims = [(r1 - r0, k1 - k0) for r0, r1, k0, k1, _, _ in blocks]
    for left, right, br in cands(dims, blocks):
        if all(
            np.array_equal(lo, plo) and np.array_equal(hi, phi)
            for (m, n), (_, _, _, _, lo, hi) in zip(dims, blocks, strict=True)
            for plo, phi in [band_rows(m, n, left, right, br)]
        ):
            return CudnnLayout(
                mask.seqlen_q,
                mask.seqlen_k,
                tuple(b[0] for b in blocks),
                tuple(m for m, _ in dims),
                tuple(b[2] for b in blocks),
                tuple(n for _, n in dims),
                left,
                right,
                br,
            )
    what = "its block does" if len(blocks) == 1 else f"its {len(blocks)} diagonal blocks do"
    raise Unsupported(f"{what} not follow one {who} band (mixed full/causal blocks?)")


def _largest(dims) -> int:
    return max(range(len(dims)), key=lambda j: dims[j][0] * dims[j][1])


def cudnn_step_layout(mask: AttnMask) -> CudnnLayout:
    """The sub-mask as one cuDNN call (CudnnLayout), or Unsupported saying why. Exact by
    construction: every block must reproduce its rows' key ranges under one shared band."""

    def cands(dims, blocks):
        ref = _largest(dims)
        # The frontend's own tests keep seq_len_q <= seq_len_kv wherever a left bound or
        # bottom-right alignment is set (a known limitation there); top-left right bounds take
        # any lengths.
        wide = all(m <= n for m, n in dims)
        out: list[tuple[int | None, int | None, bool]] = [(None, None, False)]
        for br in (False, True):
            band = _band_of(*dims[ref], *blocks[ref][4:], br)
            if band is not None and (wide or (band[0] is None and not br)) and (*band, br) not in out:
                out.append((*band, br))
        # Plain causal (right bound 0) before a wider right bound, top-left before bottom-right.
        return sorted(out, key=lambda c: (c[1] not in (None, 0), c[2]))

    return _one_band(mask, cands, "cuDNN diagonal")


def flash_step_layout(mask: AttnMask) -> CudnnLayout:
    """The sub-mask as one flash-attn varlen call: sequences of different q and k lengths, and one
    window aligned at each sequence's bottom-right corner (flash-attn's only alignment: query r of
    an m x n sequence sees key c iff r + n - m - left <= c <= r + n - m + right). In the returned
    layout's terms, flash-attn's window_size is (left_bound - 1, right_bound); None unbounded."""

    def cands(dims, blocks):
        band = _band_of(*dims[_largest(dims)], *blocks[_largest(dims)][4:], True)
        return [(None, None, True)] + ([(*band, True)] if band is not None else [])

    return _one_band(mask, cands, "flash-attn bottom-right window")


def batched_starts(starts: Sequence[int], seqlen: int, batch: int) -> list[int]:
    """Token index of each sequence's first row in the packed [B * seqlen] buffer, batch-major."""
    return [b * seqlen + int(s) for b in range(batch) for s in starts]


def offsets_at(
    starts: Sequence[int],
    total: int,
    heads: int,
    head_dim: int,
    dtype: torch.dtype = torch.int64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """cuDNN ragged offsets [n + 1, 1, 1, 1] in elements for sequences starting at token `starts`
    of a packed [total, H, D] buffer; the last entry is the buffer's end. Gaps between sequences
    (rows in no sequence) are allowed: seq_len, not the next offset, says where each one ends."""
    tok = torch.tensor([*map(int, starts), int(total)], dtype=torch.int64) * (heads * head_dim)
    return tok.to(dtype).view(-1, 1, 1, 1).to(device)


def stats_rows(layout: CudnnLayout, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each query row inside a sequence: (token in the packed [B * Sq] buffer, sequence,
    position in it), i.e. where cuDNN's padded stats [n_seqs, H, max_q_len, 1] hold its LSE."""
    lens = np.array(layout.q_lens * batch, dtype=np.int64)
    starts = np.array(batched_starts(layout.q_starts, layout.seqlen_q, batch), dtype=np.int64)
    seq = np.repeat(np.arange(lens.size), lens)
    pos = np.arange(int(lens.sum())) - (np.cumsum(lens) - lens)[seq]
    return tuple(torch.from_numpy(x) for x in (starts[seq] + pos, seq, pos))


def lse_from_stats(stats: torch.Tensor, rows, batch: int, seqlen_q: int) -> torch.Tensor:
    """cuDNN's padded stats [n_seqs, H, M, 1] -> lcab's [B, H, Sq]; rows in no sequence: -inf."""
    tok, seq, pos = rows
    vals = stats[..., 0][seq, :, pos]  # [T, H]
    out = torch.full((batch * seqlen_q, vals.shape[1]), float("-inf"), dtype=vals.dtype, device=vals.device)
    out[tok] = vals
    return out.view(batch, seqlen_q, -1).permute(0, 2, 1)


def stats_from_lse(lse: torch.Tensor, rows, n_seqs: int, max_len: int) -> torch.Tensor:
    """lcab's [B, H, Sq] LSE -> cuDNN's padded stats [n_seqs, H, max_len, 1] (padding 0)."""
    tok, seq, pos = rows
    b, h, s = lse.shape
    flat = lse.permute(0, 2, 1).reshape(b * s, h)
    out = torch.zeros(n_seqs, max_len, h, dtype=torch.float32, device=lse.device)
    out[seq, pos] = flat[tok].float()
    return out.permute(0, 2, 1).unsqueeze(-1).contiguous()


class VarlenMasks:
    """For adapters whose masks go in as one VarlenForm (cu_seqlens, causal flag, window):
    what they can express, and a working set linear in the tiles they visit."""

    name: str

    def expressed(self, mask: AttnMask):
        """The VarlenForm this kernel runs, or Unsupported; needs neither the package nor a GPU."""
        return express(self.name, mask)

    def working_set(self, mask: AttnMask, shape, mode: str) -> int:
        from lcab.harness import memory

        self.expressed(mask)  # Unsupported before any memory verdict
        return memory.tiled(mask, shape)
