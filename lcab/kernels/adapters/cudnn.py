"""`cudnn`: cuDNN fused attention through nvidia-cudnn-frontend's graph API (`import cudnn`).

Full, causal and windows go in as the diagonal band (TOP_LEFT); packed documents as the
ragged (THD) layout: per-document seq_len tensors + padding mask, and ragged offsets into the
packed [T, H, D] buffers. Forward and backward graphs are built once in prepare(); the
forward's stats (natural-log LSE, fp32, [B, H, S, 1] per sequence) feed the backward graph
through a torch.autograd.Function, so the harness can call .backward() as on any kernel.

CP steps (step_fns) take a sub-mask in local coordinates: one block, or block-diagonal blocks
whose q and k pieces differ in length and offset, all under one band (varlen_args.CudnnLayout).
They run the same graphs with separate Q and K/V offsets and seq_len tensors, bottom-right
alignment where a block is wider than tall, and the step's LSE converted to and from stats.
"""

from __future__ import annotations

import importlib

import torch

from lcab.kernels.base import (
    AttnFn,
    Capabilities,
    Kernel,
    ShapeSpec,
    StepFns,
    Unavailable,
    Unsupported,
    scale,
)
from lcab.kernels.sdpa_common import _empty_rows, _finite, _fix_empty
from lcab.kernels.varlen_args import (
    CudnnLayout,
    VarlenMasks,
    batched_starts,
    bshd_dims,
    cudnn_step_layout,
    layout_from_form,
    lse_from_stats,
    offsets_at,
    round_up,
    seq_lens_tensor,
    stats_from_lse,
    stats_rows,
    thd_dims,
)
from lcab.masks.slices import AttnMask


def _cudnn():
    return importlib.import_module("cudnn")


# Per process, shared by every cell's adapter: one cuDNN handle per device, and step graphs by
# structure (ragged sequence count, longest sequences, band, shape): the offsets and seq_len
# tensors differ per sub-mask but are inputs at execution time, so cells reuse the graphs.
_HANDLES: dict[int, object] = {}
_STEP_GRAPHS: dict[tuple, _Graphs | Unsupported] = {}


class _Graphs:
    """The forward and backward graphs of one layout shape. Offsets and seq_len tensors are
    execution-time inputs (a _Ragged), so one pair of graphs serves every layout with the same
    sequence count, longest sequences and band (CP steps reuse them across sub-masks)."""

    def __init__(
        self, cudnn, label: str, layout: CudnnLayout, shape: ShapeSpec, handle, rag, persistent=True
    ) -> None:
        self.cudnn = cudnn
        self.handle = handle
        self.device = torch.device(shape.device)
        b, hq, hkv, d = shape.batch, shape.heads_q, shape.heads_kv, shape.head_dim
        sq, sk = layout.seqlen_q, layout.seqlen_k
        self.batch, self.seqlen_q = b, sq
        self.ragged = layout.ragged
        io = {torch.bfloat16: cudnn.data_type.BFLOAT16, torch.float16: cudnn.data_type.HALF}[shape.dtype]
        self.io = io
        align = cudnn.diagonal_alignment
        self.band = {
            "diagonal_alignment": align.BOTTOM_RIGHT if layout.bottom_right else align.TOP_LEFT,
            "diagonal_band_left_bound": layout.left_bound,
            "diagonal_band_right_bound": layout.right_bound,
        }
        self.attn_scale = scale(d)
        if self.ragged:
            self.n_seqs = b * len(layout.q_lens)
            self.max_q, max_k = max(layout.q_lens), max(layout.k_lens)
            self.q_dims = thd_dims(self.n_seqs, hq, self.max_q, d)
            self.kv_dims = thd_dims(self.n_seqs, hkv, max_k, d)
            self.totals = (b * sq, b * sk)
        else:
            self.n_seqs, self.max_q = b, sq
            self.q_dims = bshd_dims(b, sq, hq, d)
            self.kv_dims = bshd_dims(b, sk, hkv, d)
        self.stats_dims = ([self.n_seqs, hq, self.max_q, 1], [hq * self.max_q, self.max_q, 1, 1])
        self.rag = rag  # a sample of the execution-time tensors, for their descriptors
        self.fwd, self.fwd_t = self._build_forward(label)
        self.bwd, self.bwd_t, self.bwd_error = None, None, None
        try:
            self.bwd, self.bwd_t = self._build_backward(label)
        except Unsupported as e:
            self.bwd_error = str(e)  # forward-only cells still run; backward raises this
        sizes = [self.fwd.get_workspace_size()] + ([self.bwd.get_workspace_size()] if self.bwd else [])
        self.workspace_size = max(sizes)
        # prepare() keeps its workspace; cached step graphs take one per call from torch's
        # caching allocator, so graphs kept for later steps hold no device memory.
        self.workspace = self._workspace() if persistent else None

    def _workspace(self) -> torch.Tensor:
        return torch.empty(self.workspace_size, dtype=torch.uint8, device=self.device)

    def _graph(self):
        c = self.cudnn
        return c.pygraph(
            io_data_type=self.io,
            intermediate_data_type=c.data_type.FLOAT,
            compute_data_type=c.data_type.FLOAT,
            handle=self.handle,
        )

    def _inputs(self, g, names_dims) -> dict:
        """Descriptors for the packed operands, ragged where the layout has several sequences."""
        t = {}
        if self.ragged:
            t["q_off"] = g.tensor_like(self.rag.q_off, name="q_ragged_offset")
            t["kv_off"] = g.tensor_like(self.rag.kv_off, name="kv_ragged_offset")
            t["seq_q"] = g.tensor_like(self.rag.seq_q, name="seq_len_q")
            t["seq_kv"] = g.tensor_like(self.rag.seq_kv, name="seq_len_kv")
        for name, (dims, strides), off in names_dims:
            x = g.tensor(name=name, dim=dims, stride=strides, data_type=self.io)
            if self.ragged:
                x.set_ragged_offset(t[off])
            t[name] = x
        return t

    def _padding(self, t: dict) -> dict:
        if not self.ragged:
            return {}
        return {"use_padding_mask": True, "seq_len_q": t["seq_q"], "seq_len_kv": t["seq_kv"]}

    def _finish(self, g, label: str, what: str) -> None:
        c = self.cudnn
        try:
            g.validate()
            g.build_operation_graph()
            g.create_execution_plans([c.heur_mode.A, c.heur_mode.FALLBACK])
            g.check_support()
            g.build_plans()
        except c.cudnnGraphNotSupportedError as e:
            raise Unsupported(f"{label}: cuDNN has no {what} engine for it ({e})") from e

    def _build_forward(self, label: str):
        c, g = self.cudnn, self._graph()
        t = self._inputs(
            g, [("q", self.q_dims, "q_off"), ("k", self.kv_dims, "kv_off"), ("v", self.kv_dims, "kv_off")]
        )
        o, stats = g.sdpa(
            name="sdpa",
            q=t["q"],
            k=t["k"],
            v=t["v"],
            attn_scale=self.attn_scale,
            generate_stats=True,
            **self._padding(t),
            **self.band,
        )
        o.set_output(True).set_dim(self.q_dims[0]).set_stride(self.q_dims[1])
        if self.ragged:
            o.set_ragged_offset(t["q_off"])
        stats.set_output(True).set_data_type(c.data_type.FLOAT)
        stats.set_dim(self.stats_dims[0]).set_stride(self.stats_dims[1])
        t["o"], t["stats"] = o, stats
        self._finish(g, label, "forward")
        return g, t

    def _build_backward(self, label: str):
        c, g = self.cudnn, self._graph()
        t = self._inputs(
            g,
            [
                ("q", self.q_dims, "q_off"),
                ("k", self.kv_dims, "kv_off"),
                ("v", self.kv_dims, "kv_off"),
                ("o", self.q_dims, "q_off"),
                ("dO", self.q_dims, "q_off"),
            ],
        )
        t["stats"] = g.tensor(
            name="stats", dim=self.stats_dims[0], stride=self.stats_dims[1], data_type=c.data_type.FLOAT
        )
        extra = {}
        if self.ragged:
            # The frontend's samples size the backward workspace by the token total rounded to
            # 64; the buffers' token counts bound it even where rows between sequences are unused.
            extra = {
                "max_total_seq_len_q": round_up(self.totals[0], 64),
                "max_total_seq_len_kv": round_up(self.totals[1], 64),
            }
        dq, dk, dv = g.sdpa_backward(
            name="sdpa_backward",
            q=t["q"],
            k=t["k"],
            v=t["v"],
            o=t["o"],
            dO=t["dO"],
            stats=t["stats"],
            attn_scale=self.attn_scale,
            **self._padding(t),
            **extra,
            **self.band,
        )
        for grad, (dims, strides), off in (
            (dq, self.q_dims, "q_off"),
            (dk, self.kv_dims, "kv_off"),
            (dv, self.kv_dims, "kv_off"),
        ):
            grad.set_output(True).set_dim(dims).set_stride(strides)
            if self.ragged:
                grad.set_ragged_offset(t[off])
        t["dQ"], t["dK"], t["dV"] = dq, dk, dv
        self._finish(g, label, "backward")
        return g, t

    def _fixed(self, t, rag: _Ragged | None) -> dict:
        if rag is None:
            return {}
        return {
            t["q_off"]: rag.q_off,
            t["kv_off"]: rag.kv_off,
            t["seq_q"]: rag.seq_q,
            t["seq_kv"]: rag.seq_kv,
        }

    def _run(self, g, pack: dict) -> None:
        self.cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream(self.device).cuda_stream)
        ws = self.workspace if self.workspace is not None else self._workspace()
        g.execute(pack, ws, handle=self.handle)

    def forward(self, q, k, v, rag: _Ragged | None):
        t = self.fwd_t
        o = torch.empty_like(q)
        stats = torch.empty(self.stats_dims[0], dtype=torch.float32, device=q.device)
        pack = {t["q"]: q, t["k"]: k, t["v"]: v, t["o"]: o, t["stats"]: stats, **self._fixed(t, rag)}
        self._run(self.fwd, pack)
        return o, stats

    def backward(self, q, k, v, o, stats, do, rag: _Ragged | None):
        if self.bwd is None:
            raise Unsupported(self.bwd_error)
        t = self.bwd_t
        # cuDNN writes only rows inside a sequence; rows in the gaps of a CP step get zeros.
        gaps = rag is not None and rag.gaps
        new = torch.zeros_like if gaps else torch.empty_like
        dq, dk, dv = new(q), new(k), new(v)
        pack = {
            t["q"]: q,
            t["k"]: k,
            t["v"]: v,
            t["o"]: o,
            t["dO"]: do,
            t["stats"]: stats,
            t["dQ"]: dq,
            t["dK"]: dk,
            t["dV"]: dv,
            **self._fixed(t, rag),
        }
        self._run(self.bwd, pack)
        return dq, dk, dv

    def lse(self, stats: torch.Tensor, rag: _Ragged | None) -> torch.Tensor:
        """cuDNN's stats (natural-log LSE of the scaled scores) as lcab's [B, H, Sq]."""
        if rag is None:
            return stats.squeeze(-1)
        return lse_from_stats(stats, rag.rows, self.batch, self.seqlen_q)

    def stats(self, lse: torch.Tensor, rag: _Ragged | None) -> torch.Tensor:
        """lcab's [B, H, Sq] LSE back into the stats layout the backward graph reads."""
        if rag is None:
            return lse.float().unsqueeze(-1).contiguous()
        return stats_from_lse(lse, rag.rows, self.n_seqs, self.max_q)


class _Ragged:
    """One layout's execution-time tensors: ragged offsets and seq_len for Q and K/V, and where
    each query row's LSE sits in the padded stats. Built on CPU by varlen_args, then moved."""

    def __init__(self, cudnn, layout: CudnnLayout, shape: ShapeSpec) -> None:
        b, dev, d = shape.batch, shape.device, shape.head_dim
        # int64 offsets from cuDNN 9.6 on (the frontend's own tests switch there).
        off_dtype = torch.int64 if cudnn.backend_version() >= 90600 else torch.int32
        sq, sk = layout.seqlen_q, layout.seqlen_k
        qs, ks = batched_starts(layout.q_starts, sq, b), batched_starts(layout.k_starts, sk, b)
        self.q_off = offsets_at(qs, b * sq, shape.heads_q, d, off_dtype, dev)
        self.kv_off = offsets_at(ks, b * sk, shape.heads_kv, d, off_dtype, dev)
        self.seq_q = seq_lens_tensor(layout.q_lens * b, dev)
        self.seq_kv = seq_lens_tensor(layout.k_lens * b, dev)
        self.rows = tuple(x.to(dev) for x in stats_rows(layout, b))
        self.gaps = sum(layout.q_lens) < sq or sum(layout.k_lens) < sk


class _CudnnAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, graphs, rag):
        o, stats = graphs.forward(q, k, v, rag)
        ctx.graphs, ctx.rag = graphs, rag
        ctx.save_for_backward(q, k, v, o, stats)
        ctx.mark_non_differentiable(stats)
        return o, stats

    @staticmethod
    def backward(ctx, do, _dstats):
        q, k, v, o, stats = ctx.saved_tensors
        dq, dk, dv = ctx.graphs.backward(q, k, v, o, stats, do.contiguous(), ctx.rag)
        return dq, dk, dv, None, None


class Cudnn(VarlenMasks, Kernel):
    name = "cudnn"
    summary = "cuDNN fused attention (frontend graph API): diagonal band + ragged THD documents"
    packages = ("nvidia-cudnn-frontend", "nvidia-cudnn-cu12", "nvidia-cudnn-cu13")
    capabilities = Capabilities(
        devices=("cuda",),
        dtypes=("bf16", "fp16"),
        mask_forms=("diagonal_band", "ragged_thd"),
        backward=True,
        steps=("cuda",),
    )

    def available(self, device: torch.device) -> tuple[bool, str]:
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            return False, "cudnn needs CUDA"
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return False, f"cuDNN fused attention needs sm80 or newer, this GPU is sm{major}{minor}"
        try:
            _cudnn()
        except ImportError as e:
            return False, f"nvidia-cudnn-frontend not installed ({e})"
        except Exception as e:  # a broken install (missing libcudnn) is unavailable, not a crash
            return False, f"nvidia-cudnn-frontend does not load: {type(e).__name__}: {e}"
        return True, ""

    def _handle(self, cudnn, shape: ShapeSpec):
        device = torch.device(shape.device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in _HANDLES:
            with torch.cuda.device(index):
                _HANDLES[index] = cudnn.create_handle()
        return _HANDLES[index]

    def _cudnn_for(self, shape: ShapeSpec):
        ok, why = self.available(shape.device)
        if not ok:
            raise Unavailable(why)
        return _cudnn()

    def prepare(self, mask: AttnMask, shape: ShapeSpec) -> AttnFn:
        form = self.expressed(mask)
        cudnn = self._cudnn_for(shape)
        layout = layout_from_form(form)
        label = f"{self.name} cannot express {mask.name}"
        rag = _Ragged(cudnn, layout, shape) if layout.ragged else None
        graphs = _Graphs(cudnn, label, layout, shape, self._handle(cudnn, shape), rag)

        def fn(q, k, v):
            out, stats = _CudnnAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), graphs, rag)
            return out, graphs.lse(stats, rag)

        fn.notes = {
            "mask_form": "ragged_thd+diagonal_band" if graphs.ragged else "diagonal_band",
            "left_bound": layout.left_bound,
            "right_bound": layout.right_bound,
            "cudnn_backend": cudnn.backend_version(),
        }
        if graphs.bwd_error:
            fn.notes["backward_unsupported"] = graphs.bwd_error
        return fn

    def step_layout(self, mask: AttnMask, shape: ShapeSpec) -> CudnnLayout:
        """The CudnnLayout of a CP step's sub-mask, or Unsupported; needs neither package nor GPU."""
        self.check(mask, shape)
        try:
            return cudnn_step_layout(mask)
        except Unsupported as e:
            raise Unsupported(f"{self.name} cannot express CP step {mask.name}: {e}") from e

    def _step_graphs_for(self, cudnn, mask: AttnMask, layout: CudnnLayout, shape: ShapeSpec, rag):
        """Cached by structure; a structure cuDNN refused stays refused without a rebuild."""
        n = (len(layout.q_lens), max(layout.q_lens), max(layout.k_lens)) if layout.ragged else ()
        band = (layout.left_bound, layout.right_bound, layout.bottom_right)
        key = (layout.ragged, n, layout.seqlen_q, layout.seqlen_k, band, shape)
        if key not in _STEP_GRAPHS:
            label = f"{self.name} cannot express CP step {mask.name} as {layout.describe()}"
            try:
                g = _Graphs(cudnn, label, layout, shape, self._handle(cudnn, shape), rag, persistent=False)
                if g.bwd_error:  # a step needs both; Unsupported lets make_tiles cut it smaller
                    raise Unsupported(g.bwd_error)
                _STEP_GRAPHS[key] = g
            except Unsupported as e:
                _STEP_GRAPHS[key] = e
        got = _STEP_GRAPHS[key]
        if isinstance(got, Unsupported):
            raise Unsupported(str(got))
        return got

    def step_fns(self, mask: AttnMask, shape: ShapeSpec) -> StepFns:
        layout = self.step_layout(mask, shape)
        cudnn = self._cudnn_for(shape)
        rag = _Ragged(cudnn, layout, shape) if layout.ragged else None
        graphs = self._step_graphs_for(cudnn, mask, layout, shape, rag)
        empty = _empty_rows(mask)
        empty = None if empty is None else empty.to(shape.device)

        def fwd(q, k, v):
            o, stats = graphs.forward(q.contiguous(), k.contiguous(), v.contiguous(), rag)
            return _fix_empty(o, graphs.lse(stats, rag), empty)

        def bwd(dout, q, k, v, out, lse):
            # Rows that see no key (lse -inf) are in no sequence, or see only masked keys.
            stats = graphs.stats(_finite(lse), rag)
            c = [x.contiguous() for x in (q, k, v, out, dout)]
            return graphs.backward(*c[:4], stats, c[4], rag)

        return StepFns(fwd, bwd, f"{layout.describe()}, gqa native")
