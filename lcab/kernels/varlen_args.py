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
