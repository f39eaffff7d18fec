"""The `cudnn` kernel's CP step arguments, checked on CPU.

A CP step's sub-mask reaches cuDNN as ragged sequences (separate Q and K/V offsets and seq_len
tensors) under one diagonal band. The references here are independent of varlen_args: the
sub-mask's dense form, and cuDNN's documented rules (ragged offsets in elements, a padding mask
from seq_len, the band of the frontend's test_mhas.py compute_ref: TOP_LEFT right bound R hides
k > q + R, left bound L hides k <= q - L, BOTTOM_RIGHT shifts both by seq_len_kv - seq_len_q;
stats = max + log(sum exp) of the scaled scores, natural log) read back from the tensors the
adapter builds. A fake `cudnn` module that executes graphs by those rules runs the adapter's
step functions end to end against lcab's eager step formula.
"""

from __future__ import annotations

import types

import pytest
import torch

from lcab.config import mask_config
from lcab.cp.sharding import balanced, contiguous, doc_zigzag, zigzag
from lcab.cp.submask import submask
from lcab.cp.tiles import StepCache, make_tiles
from lcab.kernels.adapters import cudnn as cudnn_adapter
from lcab.kernels.base import Capabilities, Kernel, ShapeSpec, StepFns, Unavailable, Unsupported
from lcab.kernels.torch_eager import eager_attention, eager_step_fns
from lcab.kernels.varlen_args import (
    CudnnLayout,
    batched_doc_lens,
    batched_starts,
    cudnn_step_layout,
    express,
    layout_from_form,
    lse_from_stats,
    offsets_at,
    ragged_offsets,
    seq_lens_tensor,
    stats_from_lse,
    stats_rows,
)
from lcab.masks import build, names
from lcab.masks.slices import AttnMask, Slice


def small_mask(name: str, seqlen: int) -> AttnMask:
    cfg = mask_config(dict(name=name, window=8, block=16, max_blocks_per_doc=3, sparse_block=16, seed=3))
    return build(cfg, seqlen)


def sub_masks(mask: AttnMask, shard) -> list[AttnMask]:
    out = []
    for r in range(shard.world):
        for t in range(shard.world):
            sm = submask(mask, shard.runs(r), shard.runs(t))
            if sm is not None:
                out.append(sm.mask)
    return out


def band_visible(m: int, n: int, left, right, bottom_right: bool) -> torch.Tensor:
    """cuDNN's band on one m x n sequence, written as the frontend's compute_ref writes it."""
    hidden = torch.zeros(m, n, dtype=torch.bool)
    shift = n - m if bottom_right else 0
    if right is not None:
        hidden |= torch.ones(m, n, dtype=torch.bool).triu(shift + 1 + right)
    if left is not None:
        hidden |= torch.ones(m, n, dtype=torch.bool).tril(shift - left)
    return ~hidden


def library_visible(layout: CudnnLayout, batch: int, heads: int = 2, head_dim: int = 4) -> torch.Tensor:
    """What cuDNN attends over the packed [B * Sq] x [B * Sk] tokens, read from the tensors the
    adapter hands it (offsets in elements, seq_len per sequence) and the band flags."""
    sq, sk = layout.seqlen_q, layout.seqlen_k
    qo = offsets_at(batched_starts(layout.q_starts, sq, batch), batch * sq, heads, head_dim).flatten()
    ko = offsets_at(batched_starts(layout.k_starts, sk, batch), batch * sk, 1, head_dim).flatten()
    lq = seq_lens_tensor(layout.q_lens * batch).flatten()
    lk = seq_lens_tensor(layout.k_lens * batch).flatten()
    assert qo.shape[0] == lq.shape[0] + 1 and ko.shape[0] == lk.shape[0] + 1
    assert qo[-1] == batch * sq * heads * head_dim and ko[-1] == batch * sk * head_dim
    out = torch.zeros(batch * sq, batch * sk, dtype=torch.bool)
    for i in range(lq.shape[0]):
        q0, k0 = int(qo[i]) // (heads * head_dim), int(ko[i]) // head_dim
        m, n = int(lq[i]), int(lk[i])
        assert int(qo[i]) % (heads * head_dim) == 0 and int(ko[i]) % head_dim == 0
        assert q0 + m <= int(qo[i + 1]) // (heads * head_dim)  # no sequence overlaps the next
        assert k0 + n <= int(ko[i + 1]) // head_dim
        blk = band_visible(m, n, layout.left_bound, layout.right_bound, layout.bottom_right)
        assert not out[q0 : q0 + m].any() and not out[:, k0 : k0 + n].any()
        out[q0 : q0 + m, k0 : k0 + n] = blk
    return out


# --- the layout: hand-computed cases -----------------------------------------------------------


def test_unequal_full_pieces_hand_computed():
    # Two documents' pieces: rows 0-2 see keys 0-1; row 3 sees nothing; rows 4-6 see keys 3-8.
    mask = AttnMask((Slice(0, 3, 0, 2), Slice(4, 7, 3, 9)), 7, 9, name="doc_step")
    lay = cudnn_step_layout(mask)
    assert lay == CudnnLayout(7, 9, (0, 4), (3, 3), (0, 3), (2, 6), None, None, False)
    assert lay.ragged and lay.describe() == "ragged_thd+full"
    # Batch 2, Hq 2, D 4: query offsets are token starts x 8 elements, the end is the buffer's.
    q_off = offsets_at(batched_starts(lay.q_starts, 7, 2), 14, 2, 4)
    assert q_off.shape == (5, 1, 1, 1) and q_off.flatten().tolist() == [0, 32, 56, 88, 112]
    kv_off = offsets_at(batched_starts(lay.k_starts, 9, 2), 18, 1, 4, torch.int32)
    assert kv_off.dtype == torch.int32 and kv_off.flatten().tolist() == [0, 12, 36, 48, 72]
    tok, seq, pos = stats_rows(lay, 2)
    assert tok.tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9, 11, 12, 13]
    assert seq.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert pos.tolist() == [0, 1, 2] * 4


def test_square_causal_pieces_with_gaps():
    mask = AttnMask((Slice(0, 3, 0, 3, "causal"), Slice(5, 9, 4, 8, "causal")), 9, 8)
    lay = cudnn_step_layout(mask)
    assert (lay.q_starts, lay.q_lens, lay.k_starts, lay.k_lens) == ((0, 5), (3, 4), (0, 4), (3, 4))
    assert (lay.left_bound, lay.right_bound, lay.bottom_right) == (None, 0, False)
    assert lay.describe() == "ragged_thd+causal"


def test_single_blocks_are_not_ragged():
    lay = cudnn_step_layout(AttnMask((Slice(0, 5, 0, 7),), 5, 7))
    assert not lay.ragged and lay.describe() == "bshd+full"
    lay = cudnn_step_layout(AttnMask((Slice(0, 6, 0, 6, "causal"),), 6, 6))
    assert (lay.ragged, lay.left_bound, lay.right_bound, lay.bottom_right) == (False, None, 0, False)


def test_rectangular_causal_needs_its_alignment():
    # lcab's causal slice is bottom-right aligned: row i sees keys j <= i + (n - m).
    lay = cudnn_step_layout(AttnMask((Slice(0, 4, 0, 10, "causal"),), 4, 10))
    assert (lay.left_bound, lay.right_bound, lay.bottom_right) == (None, 0, True)
    assert lay.describe() == "bshd+causal_bottom_right"
    # inv_causal is top-left aligned: row i sees j >= i, i.e. a left bound of 1 at the top left.
    lay = cudnn_step_layout(AttnMask((Slice(0, 4, 0, 10, "inv_causal"),), 4, 10))
    assert (lay.left_bound, lay.right_bound, lay.bottom_right) == (1, None, False)
    for m in (
        AttnMask((Slice(0, 4, 0, 10, "causal"),), 4, 10),
        AttnMask((Slice(0, 4, 0, 10, "inv_causal"),), 4, 10),
    ):
        lay = cudnn_step_layout(m)
        assert torch.equal(library_visible(lay, 1), m.dense())


def test_taller_than_wide_blocks_take_only_a_top_left_right_bound():
    # Rows 0-2 causal over keys 0-2, rows 3-4 see all three: top-left causal, any lengths.
    tall = AttnMask((Slice(0, 3, 0, 3, "causal"), Slice(3, 5, 0, 3)), 5, 3)
    lay = cudnn_step_layout(tall)
    assert (lay.left_bound, lay.right_bound, lay.bottom_right) == (None, 0, False)
    assert torch.equal(library_visible(lay, 1), tall.dense())
    # A left bound on a block taller than wide is outside what cuDNN is tested for: refused.
    band = AttnMask((Slice(0, 2, 0, 2, "causal"), Slice(2, 4, 1, 3, "inv_causal")), 4, 3)
    assert band.dense().int().tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]]
    with pytest.raises(Unsupported, match="not follow one cuDNN diagonal band"):
        cudnn_step_layout(band)


def test_mixed_and_multi_range_sub_masks_are_refused():
    mixed = AttnMask((Slice(0, 3, 0, 3, "causal"), Slice(3, 6, 3, 7)), 6, 7)
    with pytest.raises(Unsupported, match="2 diagonal blocks do not follow one cuDNN diagonal band"):
        cudnn_step_layout(mixed)
    two_ranges = AttnMask((Slice(0, 4, 0, 2), Slice(0, 4, 5, 8)), 4, 8)
    with pytest.raises(Unsupported, match="row 0 sees 2 disjoint key ranges"):
        cudnn_step_layout(two_ranges)
    # One block whose rows share keys across a row that sees nothing: no contiguous sequence.
    holed = AttnMask((Slice(0, 2, 0, 3), Slice(3, 5, 0, 3)), 5, 3)
    with pytest.raises(Unsupported, match="some of them see nothing"):
        cudnn_step_layout(holed)


def test_kernel_step_layout_checks_dtype_and_prefixes_the_reason():
    k = cudnn_adapter.Cudnn()
    mask = AttnMask((Slice(0, 3, 0, 3, "causal"), Slice(3, 6, 3, 7)), 6, 7, name="x[sub]")
    bf16 = ShapeSpec(1, 4, 2, 8, torch.bfloat16, torch.device("cpu"))
    with pytest.raises(Unsupported, match=r"cudnn cannot express CP step x\[sub\]: its 2 diagonal"):
        k.step_layout(mask, bf16)
    with pytest.raises(Unsupported, match="dtype fp32"):
        k.step_layout(AttnMask((Slice(0, 4, 0, 4),), 4, 4), ShapeSpec(1, 4, 2, 8, torch.float32, "cpu"))
    with pytest.raises(Unavailable, match="cudnn needs CUDA"):
        k.step_fns(AttnMask((Slice(0, 4, 0, 4),), 4, 4), bf16)


def test_prepare_layout_of_documents_is_the_old_packed_one():
    """prepare() builds its layout from the VarlenForm: contiguous square documents, whose
    offsets must equal the cumulative-length offsets it used before CP steps shared the code."""
    mask = small_mask("causal_document", 97)
    lay = layout_from_form(express("cudnn", mask))
    lens = batched_doc_lens(mask.doc_lens, 2)
    got = offsets_at(batched_starts(lay.q_starts, 97, 2), 2 * 97, 4, 8)
    assert torch.equal(got, ragged_offsets(lens, 4, 8))
    assert (lay.left_bound, lay.right_bound, lay.bottom_right) == (None, 0, False)
    assert torch.equal(library_visible(lay, 2), torch.block_diag(mask.dense(), mask.dense()))
    assert not layout_from_form(express("cudnn", small_mask("causal", 97))).ragged


# --- the layout against the dense sub-masks of real CP steps -------------------------------------


def shards(mask: AttnMask, world: int):
    return [zigzag(mask.seqlen_q, world), doc_zigzag(mask, world), contiguous(mask.seqlen_q, world)] + (
        [balanced(mask, world)] if mask.seqlen_q >= 8 * world else []
    )


@pytest.mark.parametrize("name", names())
def test_every_expressed_step_is_exactly_the_sub_mask(name):
    """Wherever a layout comes back, cuDNN's documented rules on its tensors give exactly the
    sub-mask (batch rows block diagonal); each visible pair lies in exactly one (q piece, k piece)."""
    mask = small_mask(name, 97)
    seen = 0
    for world in (2, 3, 4):
        for shard in shards(mask, world):
            for sm in sub_masks(mask, shard):
                try:
                    lay = cudnn_step_layout(sm)
                except Unsupported:
                    continue
                seen += 1
                dense = sm.dense()
                assert torch.equal(library_visible(lay, 2), torch.block_diag(dense, dense))
                # Rows and keys of different pieces are disjoint and every visible pair is inside one.
                cover = torch.zeros_like(dense, dtype=torch.int64)
                for q0, m, k0, n in zip(lay.q_starts, lay.q_lens, lay.k_starts, lay.k_lens, strict=True):
                    cover[q0 : q0 + m, k0 : k0 + n] += 1
                assert cover.max() <= 1 and bool((cover[dense] == 1).all())
                assert sum(lay.q_lens) == int(dense.any(1).sum())
    assert seen > 0


class _LayoutOnly(Kernel):
    """Stands in for cudnn on CPU: its step functions exist iff cuDNN's layout does."""

    name = "cudnn_layout"
    capabilities = Capabilities(
        devices=("cpu",), dtypes=("bf16",), mask_forms=(), backward=True, steps=("cpu",)
    )

    def step_fns(self, mask, shape):
        lay = cudnn_step_layout(mask)
        return StepFns(None, None, lay.describe())


@pytest.mark.parametrize(
    "name", ["causal_document", "full_document", "causal", "full", "sliding_window_causal"]
)
def test_every_cp_step_of_the_target_masks_runs(name):
    """Whole, or cut per run pair by make_tiles where a step mixes full and causal blocks."""
    shape = ShapeSpec(1, 4, 2, 8, torch.bfloat16, torch.device("cpu"))
    for seqlen in (97, 256):
        mask = small_mask(name, seqlen)
        for world in (2, 3, 4):
            for shard in shards(mask, world):
                cache = StepCache(_LayoutOnly(), shape)
                for r in range(world):
                    area = 0
                    for t in range(world):
                        tiles = make_tiles(mask, shard.runs(r), shard.runs(t), cache)
                        area += sum(x.area for x in tiles)
                    assert area == shard.row_area(mask, r)
                assert all(f.startswith(("bshd", "ragged_thd")) for f in cache.forms)


def test_doc_zigzag_steps_are_one_call_with_unequal_pieces():
    mask = small_mask("causal_document", 256)
    forms = {cudnn_step_layout(m).describe() for m in sub_masks(mask, doc_zigzag(mask, 4))}
    assert forms == {"ragged_thd+full", "ragged_thd+causal"}
    off_diag = [cudnn_step_layout(m) for m in sub_masks(mask, doc_zigzag(mask, 4))]
    assert any(lay.q_lens != lay.k_lens for lay in off_diag)


# --- LSE <-> cuDNN stats ---------------------------------------------------------------------------


def test_stats_round_trip_and_padding():
    lay = cudnn_step_layout(AttnMask((Slice(0, 3, 0, 2), Slice(4, 7, 3, 9)), 7, 9))
    b, h = 2, 3
    rows = stats_rows(lay, b)
    lse = torch.randn(b, h, 7)
    n_seqs, max_len = b * len(lay.q_lens), max(lay.q_lens)
    stats = stats_from_lse(lse, rows, n_seqs, max_len)
    assert stats.shape == (n_seqs, h, max_len, 1) and stats.is_contiguous()
    # Reference: sequence (batch, piece) holds that piece's rows of that batch row, in order.
    for bi in range(b):
        for p, (q0, m) in enumerate(zip(lay.q_starts, lay.q_lens, strict=True)):
            assert torch.equal(stats[bi * 2 + p, :, :m, 0], lse[bi, :, q0 : q0 + m])
    back = lse_from_stats(stats, rows, b, 7)
    assert back.shape == (b, h, 7)
    assert torch.equal(back[:, :, [0, 1, 2, 4, 5, 6]], lse[:, :, [0, 1, 2, 4, 5, 6]])
    assert torch.isneginf(back[:, :, 3]).all()


# --- the adapter end to end on a fake cuDNN that executes the documented rules -------------------


class _T:
    """A graph tensor descriptor."""

    def __init__(self, dim=None, stride=None, name=""):
        self.dim, self.stride, self.name, self.ragged = dim, stride, name, None

    def set_output(self, _):
        return self

    def set_dim(self, d):
        self.dim = list(d)
        return self

    def set_stride(self, s):
        self.stride = list(s)
        return self

    def set_data_type(self, _):
        return self

    def set_ragged_offset(self, t):
        self.ragged = t
        return self


class _Graph:
    def __init__(self, **_):
        self.op = None

    def tensor(self, name, dim, stride, data_type):
        return _T(list(dim), list(stride), name)

    def tensor_like(self, x, name=""):
        return _T(list(x.shape), list(x.stride()), name)

    def sdpa(self, q, k, v, attn_scale, generate_stats, **kw):
        assert generate_stats
        self.op = ("fwd", dict(q=q, k=k, v=v, o=_T(), stats=_T()), attn_scale, kw)
        return self.op[1]["o"], self.op[1]["stats"]

    def sdpa_backward(self, q, k, v, o, dO, stats, attn_scale, **kw):
        t = dict(q=q, k=k, v=v, o=o, dO=dO, stats=stats, dQ=_T(), dK=_T(), dV=_T())
        self.op = ("bwd", t, attn_scale, kw)
        return t["dQ"], t["dK"], t["dV"]

    def validate(self):
        pass

    build_operation_graph = check_support = build_plans = validate

    def create_execution_plans(self, _):
        pass

    def get_workspace_size(self):
        return 0

    def execute(self, pack, workspace, handle=None):
        kind, t, sc, kw = self.op
        align = kw["diagonal_alignment"]
        left, right = kw["diagonal_band_left_bound"], kw["diagonal_band_right_bound"]
        padded = kw.get("use_padding_mask", False)

        def seq(name, i, rows):
            """The first `rows` rows of sequence i of operand `name`, [H, rows, D], as described."""
            desc, x = t[name], pack[t[name]]
            n_seq, h, s, d = desc.dim
            st = desc.stride
            assert rows <= s
            if desc.ragged is not None:
                offs = pack[desc.ragged].flatten().tolist()
                assert len(offs) == n_seq + 1 and offs == sorted(offs)
                base = offs[i]
            else:
                base = i * st[0]
            flat = x.view(-1)
            return flat.as_strided((h, rows, d), (st[1], st[2], st[3]), flat.storage_offset() + base)

        n_seqs = t["q"].dim[0]
        lq = pack[kw["seq_len_q"]].flatten().tolist() if padded else [t["q"].dim[2]] * n_seqs
        lk = pack[kw["seq_len_kv"]].flatten().tolist() if padded else [t["k"].dim[2]] * n_seqs
        assert all(m <= t["q"].dim[2] for m in lq) and all(n <= t["k"].dim[2] for n in lk)
        if kind == "bwd" and padded:
            assert kw["max_total_seq_len_q"] >= sum(lq) and kw["max_total_seq_len_kv"] >= sum(lk)
        for i in range(n_seqs):
            m, n = lq[i], lk[i]
            q, k, v = seq("q", i, m), seq("k", i, n), seq("v", i, n)
            rep = q.shape[0] // k.shape[0]
            kf, vf = k.float().repeat_interleave(rep, 0), v.float().repeat_interleave(rep, 0)
            s = q.float() @ kf.transpose(1, 2) * sc
            vis = band_visible(m, n, left, right, align == "BOTTOM_RIGHT")
            s = s.masked_fill(~vis, float("-inf"))
            sd = t["stats"]
            assert sd.stride == [sd.dim[1] * sd.dim[2], sd.dim[2], 1, 1] and pack[sd].is_contiguous()
            st = pack[sd][..., 0][i, :, :m]
            if kind == "fwd":
                lse = torch.logsumexp(s, -1)
                p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
                seq("o", i, m).copy_((p @ vf).to(q.dtype))
                st.copy_(lse)
                continue
            do, o = seq("dO", i, m).float(), seq("o", i, m).float()
            p = torch.exp(s - st[..., None])
            dv = p.transpose(1, 2) @ do
            ds = p * (do @ vf.transpose(1, 2) - (do * o).sum(-1, keepdim=True))
            dq, dk = ds @ kf * sc, ds.transpose(1, 2) @ q.float() * sc
            h = k.shape[0]
            for name, g in (
                ("dQ", dq),
                ("dK", dk.view(h, rep, n, -1).sum(1)),
                ("dV", dv.view(h, rep, n, -1).sum(1)),
            ):
                seq(name, i, g.shape[1]).copy_(g.to(q.dtype))


def _fake_cudnn():
    enum = types.SimpleNamespace
    return types.SimpleNamespace(
        data_type=enum(BFLOAT16="bf16", HALF="fp16", FLOAT="fp32"),
        diagonal_alignment=enum(TOP_LEFT="TOP_LEFT", BOTTOM_RIGHT="BOTTOM_RIGHT"),
        heur_mode=enum(A="A", FALLBACK="FALLBACK"),
        cudnnGraphNotSupportedError=RuntimeError,
        backend_version=lambda: 90700,
        pygraph=_Graph,
    )


@pytest.fixture
def fake_cudnn(monkeypatch):
    """The adapter on CPU with the fake library in place of `import cudnn`, no CUDA stream."""
    fake = _fake_cudnn()
    monkeypatch.setattr(cudnn_adapter, "_cudnn", lambda: fake)
    monkeypatch.setattr(cudnn_adapter, "_STEP_GRAPHS", {})  # graphs of the fake library only
    monkeypatch.setattr(cudnn_adapter.Cudnn, "available", lambda self, d: (True, ""))
    monkeypatch.setattr(cudnn_adapter.Cudnn, "_handle", lambda self, c, s: None)
    monkeypatch.setattr(cudnn_adapter._Graphs, "_run", lambda self, g, pack: g.execute(pack, None))
    return cudnn_adapter.Cudnn()


def _inputs(mask, shape, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(s, h):
        return torch.randn(shape.batch, s, h, shape.head_dim, generator=g).to(shape.dtype)

    return r(mask.seqlen_q, shape.heads_q), r(mask.seqlen_k, shape.heads_kv), r(mask.seqlen_k, shape.heads_kv)


def _close(a, b, tol=3e-2):
    a, b = a.float(), b.float()
    fin = torch.isfinite(b)
    assert torch.equal(torch.isfinite(a), fin)
    return (a[fin] - b[fin]).abs().max().item() <= tol * max(1.0, b[fin].abs().max().item())


CASES = {
    "full_rect": AttnMask((Slice(0, 12, 0, 20),), 12, 20),
    "causal_sq": AttnMask((Slice(0, 16, 0, 16, "causal"),), 16, 16),
    "causal_rect": AttnMask((Slice(0, 8, 0, 20, "causal"),), 8, 20),
    "docs_full": AttnMask((Slice(0, 5, 0, 3), Slice(6, 13, 3, 12), Slice(13, 15, 14, 20)), 15, 20),
    "docs_causal": AttnMask((Slice(0, 5, 0, 5, "causal"), Slice(7, 13, 6, 12, "causal")), 13, 14),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_fns_on_the_fake_library_match_the_eager_step(fake_cudnn, case):
    mask = CASES[case]
    shape = ShapeSpec(2, 4, 2, 16, torch.bfloat16, torch.device("cpu"))
    fns = fake_cudnn.step_fns(mask, shape)
    ref = eager_step_fns(mask, ShapeSpec(2, 4, 2, 16, torch.float32, torch.device("cpu")))
    q, k, v = _inputs(mask, shape)
    out, lse = fns.fwd(q, k, v)
    rout, rlse = ref.fwd(q.float(), k.float(), v.float())
    assert out.shape == q.shape and out.dtype == q.dtype and lse.shape == (2, 4, mask.seqlen_q)
    assert lse.dtype == torch.float32 and _close(out, rout) and _close(lse, rlse, 1e-4)
    empty = ~mask.dense().any(1)
    assert torch.equal(out[:, empty].float().abs().sum(), torch.tensor(0.0))
    # The backward takes a foreign (global) out and lse, as a ring step does.
    g = torch.Generator().manual_seed(1)
    dout = torch.randn(q.shape, generator=g).to(q.dtype)
    gout = (rout + 0.3 * torch.randn(q.shape, generator=g)).to(q.dtype)
    glse = rlse + torch.rand(rlse.shape, generator=g)
    grads = fns.bwd(dout, q, k, v, gout, glse)
    rgrads = ref.bwd(dout.float(), q.float(), k.float(), v.float(), gout.float(), glse)
    for a, b, x in zip(grads, rgrads, (q, k, v), strict=True):
        assert a.shape == x.shape and a.dtype == x.dtype and _close(a, b)
    unseen = ~mask.dense().any(0)
    assert grads[0][:, empty].abs().sum() == 0 and grads[1][:, unseen].abs().sum() == 0


def test_real_cp_steps_on_the_fake_library(fake_cudnn):
    mask = small_mask("causal_document", 64)
    shape = ShapeSpec(1, 4, 2, 16, torch.bfloat16, torch.device("cpu"))
    fp32 = ShapeSpec(1, 4, 2, 16, torch.float32, torch.device("cpu"))
    for sm in sub_masks(mask, doc_zigzag(mask, 2)) + sub_masks(mask, zigzag(64, 2)):
        fns = fake_cudnn.step_fns(sm, shape)
        ref = eager_step_fns(sm, fp32)
        q, k, v = _inputs(sm, shape)
        out, lse = fns.fwd(q, k, v)
        rout, rlse = ref.fwd(q.float(), k.float(), v.float())
        assert _close(out, rout) and _close(lse, rlse, 1e-4)
        dq, dk, dv = fns.bwd(out, q, k, v, out, lse)
        for a, b in zip(
            (dq, dk, dv), ref.bwd(out.float(), q.float(), k.float(), v.float(), rout, rlse), strict=True
        ):
            assert _close(a, b)
    # Graphs are shared by structure, not rebuilt per sub-mask.
    assert len(cudnn_adapter._STEP_GRAPHS) < len(sub_masks(mask, doc_zigzag(mask, 2))) + 4


def test_prepare_still_matches_eager_on_documents(fake_cudnn):
    mask = small_mask("causal_document", 48)
    shape = ShapeSpec(2, 4, 2, 16, torch.bfloat16, torch.device("cpu"))
    fn = fake_cudnn.prepare(mask, shape)
    q, k, v = (x.requires_grad_() for x in _inputs(mask, shape))
    out, lse = fn(q, k, v)
    qf, kf, vf = (x.detach().float().requires_grad_() for x in (q, k, v))
    rout, rlse = eager_attention(qf, kf, vf, mask.dense())
    assert fn.notes["mask_form"] == "ragged_thd+diagonal_band"
    assert _close(out.detach(), rout.detach()) and _close(lse, rlse.detach(), 1e-4)
    dout = torch.randn(q.shape).to(q.dtype)
    out.backward(dout)
    rout.backward(dout.float())
    for a, b in zip((q.grad, k.grad, v.grad), (qf.grad, kf.grad, vf.grad), strict=True):
        assert _close(a, b)
