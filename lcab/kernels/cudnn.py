"""`cudnn`: cuDNN fused attention through nvidia-cudnn-frontend's graph API (`import cudnn`).

Full, causal and windows go in as the diagonal band (TOP_LEFT); packed documents as the
ragged (THD) layout: per-document seq_len tensors + padding mask, and ragged offsets into the
packed [T, H, D] buffers. Forward and backward graphs are built once in prepare(); the
forward's stats (natural-log LSE, fp32, [B, H, S, 1] per sequence) feed the backward graph
through a torch.autograd.Function, so the harness can call .backward() as on any kernel.
"""

from __future__ import annotations

import importlib

import torch

from lcab.kernels.base import (
    AttnFn,
    Capabilities,
    Kernel,
    ShapeSpec,
    Unavailable,
    Unsupported,
    register,
    scale,
)
from lcab.kernels.varlen_args import (
    batched_doc_lens,
    bshd_dims,
    cudnn_band,
    express,
    lse_from_padded,
    padded_positions,
    ragged_offsets,
    round_up,
    seq_lens_tensor,
    thd_dims,
)
from lcab.masks.slices import AttnMask


def _cudnn():
    return importlib.import_module("cudnn")


class _Graphs:
    """The forward and backward graphs of one (mask, shape), their fixed inputs and workspace."""

    def __init__(self, cudnn, kernel: str, mask: AttnMask, form, shape: ShapeSpec, handle) -> None:
        self.cudnn = cudnn
        self.handle = handle
        self.device = torch.device(shape.device)
        b, hq, hkv, d = shape.batch, shape.heads_q, shape.heads_kv, shape.head_dim
        s = mask.seqlen_q
        self.batch = b
        self.ragged = len(form.doc_lens) > 1
        io = {torch.bfloat16: cudnn.data_type.BFLOAT16, torch.float16: cudnn.data_type.HALF}[shape.dtype]
        self.io = io
        left, right = cudnn_band(form.causal, form.window_left, form.window_right)
        self.band = {
            "diagonal_alignment": cudnn.diagonal_alignment.TOP_LEFT,
            "diagonal_band_left_bound": left,
            "diagonal_band_right_bound": right,
        }
        self.attn_scale = scale(d)
        if self.ragged:
            lens = batched_doc_lens(form.doc_lens, b)
            self.n_seqs, self.max_s = len(lens), max(lens)
            self.q_dims = thd_dims(self.n_seqs, hq, self.max_s, d)
            self.kv_dims = thd_dims(self.n_seqs, hkv, self.max_s, d)
            # int64 offsets from cuDNN 9.6 on (the frontend's own tests switch there).
            off_dtype = torch.int64 if cudnn.backend_version() >= 90600 else torch.int32
            self.q_off = ragged_offsets(lens, hq, d, off_dtype, self.device)
            self.kv_off = ragged_offsets(lens, hkv, d, off_dtype, self.device)
            self.seq_len = seq_lens_tensor(lens, self.device)
            self.seq, self.pos = padded_positions(lens, self.device)
            self.total = b * s
        else:
            self.n_seqs, self.max_s = b, s
            self.q_dims = bshd_dims(b, s, hq, d)
            self.kv_dims = bshd_dims(b, s, hkv, d)
        self.stats_dims = ([self.n_seqs, hq, self.max_s, 1], [hq * self.max_s, self.max_s, 1, 1])
        self.fwd, self.fwd_t = self._build_forward(kernel, mask)
        self.bwd, self.bwd_t, self.bwd_error = None, None, None
        try:
            self.bwd, self.bwd_t = self._build_backward(kernel, mask)
        except Unsupported as e:
            self.bwd_error = str(e)  # forward-only cells still run; backward raises this
        sizes = [self.fwd.get_workspace_size()] + ([self.bwd.get_workspace_size()] if self.bwd else [])
        self.workspace = torch.empty(max(sizes), dtype=torch.uint8, device=self.device)

    def _graph(self):
        c = self.cudnn
        return c.pygraph(
            io_data_type=self.io,
            intermediate_data_type=c.data_type.FLOAT,
            compute_data_type=c.data_type.FLOAT,
            handle=self.handle,
        )

    def _inputs(self, g, names_dims) -> dict:
        """Descriptors for the packed operands, ragged where the mask has documents."""
        t = {}
        if self.ragged:
            t["q_off"] = g.tensor_like(self.q_off, name="q_ragged_offset")
            t["kv_off"] = g.tensor_like(self.kv_off, name="kv_ragged_offset")
            t["seq_q"] = g.tensor_like(self.seq_len, name="seq_len_q")
            t["seq_kv"] = g.tensor_like(self.seq_len, name="seq_len_kv")
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

    def _finish(self, g, kernel: str, mask: AttnMask, what: str) -> None:
        c = self.cudnn
        try:
            g.validate()
            g.build_operation_graph()
            g.create_execution_plans([c.heur_mode.A, c.heur_mode.FALLBACK])
            g.check_support()
            g.build_plans()
        except c.cudnnGraphNotSupportedError as e:
            raise Unsupported(
                f"{kernel} cannot express {mask.name}: cuDNN has no {what} engine for it ({e})"
            ) from e

    def _build_forward(self, kernel: str, mask: AttnMask):
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
        self._finish(g, kernel, mask, "forward")
        return g, t

    def _build_backward(self, kernel: str, mask: AttnMask):
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
            # The frontend's samples size the backward workspace by the token total rounded to 64.
            extra = {
                "max_total_seq_len_q": round_up(self.total, 64),
                "max_total_seq_len_kv": round_up(self.total, 64),
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
        self._finish(g, kernel, mask, "backward")
        return g, t

    def _fixed(self, t) -> dict:
        if not self.ragged:
            return {}
        return {
            t["q_off"]: self.q_off,
            t["kv_off"]: self.kv_off,
            t["seq_q"]: self.seq_len,
            t["seq_kv"]: self.seq_len,
        }

    def _run(self, g, pack: dict) -> None:
        self.cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream(self.device).cuda_stream)
        g.execute(pack, self.workspace, handle=self.handle)

    def forward(self, q, k, v):
        t = self.fwd_t
        o = torch.empty_like(q)
        stats = torch.empty(self.stats_dims[0], dtype=torch.float32, device=q.device)
        self._run(self.fwd, {t["q"]: q, t["k"]: k, t["v"]: v, t["o"]: o, t["stats"]: stats, **self._fixed(t)})
        return o, stats

    def backward(self, q, k, v, o, stats, do):
        if self.bwd is None:
            raise Unsupported(self.bwd_error)
        t = self.bwd_t
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
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
            **self._fixed(t),
        }
        self._run(self.bwd, pack)
        return dq, dk, dv

    def lse(self, stats: torch.Tensor) -> torch.Tensor:
        if self.ragged:
            return lse_from_padded(stats, self.seq, self.pos, self.batch)
        return stats.squeeze(-1)


class _CudnnAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, graphs):
        o, stats = graphs.forward(q, k, v)
        ctx.graphs = graphs
        ctx.save_for_backward(q, k, v, o, stats)
        ctx.mark_non_differentiable(stats)
        return o, stats

    @staticmethod
    def backward(ctx, do, _dstats):
        q, k, v, o, stats = ctx.saved_tensors
        dq, dk, dv = ctx.graphs.backward(q, k, v, o, stats, do.contiguous())
        return dq, dk, dv, None


@register
class Cudnn(Kernel):
    name = "cudnn"
    summary = "cuDNN fused attention (frontend graph API): diagonal band + ragged THD documents"
    packages = ("nvidia-cudnn-frontend", "nvidia-cudnn-cu12", "nvidia-cudnn-cu13")
    capabilities = Capabilities(
        devices=("cuda",),
        dtypes=("bf16", "fp16"),
        mask_forms=("diagonal_band", "ragged_thd"),
        gqa=True,
        backward=True,
        returns_lse=True,
    )

    def __init__(self) -> None:
        self._handles: dict[int, object] = {}

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

    def expressed(self, mask: AttnMask):
        """The VarlenForm cuDNN runs, or Unsupported; needs neither the package nor a GPU."""
        return express(self.name, mask)

    def prepare(self, mask: AttnMask, shape: ShapeSpec) -> AttnFn:
        form = self.expressed(mask)
        ok, why = self.available(shape.device)
        if not ok:
            raise Unavailable(why)
        cudnn = _cudnn()
        device = torch.device(shape.device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in self._handles:
            with torch.cuda.device(index):
                self._handles[index] = cudnn.create_handle()
        graphs = _Graphs(cudnn, self.name, mask, form, shape, self._handles[index])

        def fn(q, k, v):
            out, stats = _CudnnAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), graphs)
            return out, graphs.lse(stats)

        left, right = cudnn_band(form.causal, form.window_left, form.window_right)
        fn.notes = {
            "mask_form": "ragged_thd+diagonal_band" if graphs.ragged else "diagonal_band",
            "left_bound": left,
            "right_bound": right,
            "cudnn_backend": cudnn.backend_version(),
        }
        if graphs.bwd_error:
            fn.notes["backward_unsupported"] = graphs.bwd_error
        return fn
