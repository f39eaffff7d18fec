"""yunchang's USP (LongContextAttention: Ulysses all-to-all x ring) as a peer, through lcab's
harness and metrics.

What runs is yunchang's own code: set_seq_parallel_pg's process groups, its SeqAllToAll4D,
its ring schedule (ring_impl_type "basic" or "zigzag"), its fp32 out/LSE merge and its dK/dV
rotation. Only the per-block attention kernel is chosen from the cell's kernel:
  kernel=flash2 -> AttnType.FA, flash3 -> AttnType.FA3 (yunchang's own kernels, CUDA)
  kernel=sdpa_flash / sdpa_efficient / sdpa_math / sdpa_cudnn -> AttnType.TORCH_* (yunchang's
      torch path: forward only in 0.6.4, pytorch_attn_backward raises; math/cudnn give LSE 0)
  any other kernel with step functions (torch, sdpa, ...) -> that lcab kernel's per-step
      (out, lse) forward and FlashAttention-style backward, handed to yunchang where it asks
      select_flash_attn_impl for a block kernel. This is how yunchang runs on CPU + gloo:
      0.6.4 has no CPU attention with an LSE and no torch backward at all.
yunchang expresses only is_causal: full and causal masks; anything else is Unsupported.
Backward limits found on CPU (recorded as unsupported, forward still runs): gradients are right
for bf16/fp16 only (fp32 block buffers alias), and a ring degree of 1 sends dK/dV to itself,
which gloo refuses.

Layout: yunchang's EXTRACT_FUNC_DICT; cp.shard picks it. contiguous = basic_extract_local
(rank g holds chunk g of W); zigzag = zigzag_extract_local (2R chunks, ring member r holds
chunks r and 2R-1-r, split among its Ulysses group). The strategy hands its layout back as the
plan's shard, so lcab cuts and gathers exactly those tokens.
Communication is counted by wrapping the torch.distributed calls yunchang's modules make.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lcab.config import MeshCPConfig
from lcab.cp.base import Degrees, RankPlan, RunCtx, Strategy, Topology, full_or_causal_only, mesh_degrees
from lcab.cp.comm import CommStats, nbytes
from lcab.cp.heads import local_shape
from lcab.cp.sharding import Shard, shard_from_ranges
from lcab.cp.tiles import StepCache
from lcab.kernels.base import Kernel, ShapeSpec, Unavailable, Unsupported
from lcab.masks.slices import AttnMask, Slice, SliceType

# lcab kernel name -> yunchang AttnType name (its own kernels); other kernels run as "lcab".
YUNCHANG_ATTN = {
    "flash2": "FA",
    "flash3": "FA3",
    "sdpa_flash": "TORCH_FLASH",
    "sdpa_efficient": "TORCH_EFFICIENT",
    "sdpa_math": "TORCH_MATH",
    "sdpa_cudnn": "TORCH_CUDNN",
}
NO_BACKWARD = "yunchang 0.6.4's torch attention path has no backward (pytorch_attn_backward raises)"
# Found running yunchang 0.6.4 on CPU: its ring backward keeps `buf.to(torch.float32)` as the
# running dq/dk/dv, which is the buffer itself for fp32 input and is overwritten by the next step.
FP32_BWD = (
    "yunchang 0.6.4's ring backward is wrong for fp32/fp64 input: `block_dq_buffer.to(torch.float32)` "
    "aliases the reused block buffer (it targets bf16/fp16); forward only"
)
SELF_SEND = (
    "yunchang's ring backward sends dK/dV to itself when the ring degree is 1, which gloo cannot "
    "(Pair is not connected); forward only on CPU"
)
ZERO_LSE = ("TORCH_MATH", "TORCH_CUDNN")  # yunchang returns lse = 0 for these: ring merges break


@dataclass(frozen=True, kw_only=True)
class YunchangPlan(RankPlan):
    attn: object  # a yunchang AttnType, or an LcabBlockKernel in its place
    ring_impl: str  # yunchang's ring_impl_type: basic | zigzag
    rep: int  # KV heads repeated this many times before the call
    causal: bool


class LcabBlockKernel:
    """Stands in for a yunchang AttnType: select_flash_attn_impl resolves it to lcab step fns."""

    def __init__(self, cache: StepCache, shape: ShapeSpec) -> None:
        self.cache, self.shape = cache, shape

    def fns(self, lq: int, lk: int, causal: bool):
        kind = SliceType.CAUSAL if causal else SliceType.FULL
        if causal and lq != lk:
            raise Unsupported(f"yunchang asked for a causal {lq}x{lk} block")
        return self.cache.get(AttnMask((Slice(0, lq, 0, lk, kind),), lq, lk, name=kind.value))

    def fwd(self, q, k, v, *args, causal=False, **kwargs):
        return self.fns(q.shape[1], k.shape[1], causal).fwd(q, k, v)

    def bwd(self, dout, q, k, v, out, lse, dq_buf, dk_buf, dv_buf, dropout_p, scale, causal, *args, **kw):
        dq, dk, dv = self.fns(q.shape[1], k.shape[1], bool(causal)).bwd(dout, q, k, v, out, lse)
        dq_buf.copy_(dq)
        dk_buf.copy_(dk)
        dv_buf.copy_(dv)


class _Hooks:
    """What the patched yunchang module globals report to: the current call's stats and timer."""

    stats: CommStats | None = None
    timer = None


class _CountingDist:
    """torch.distributed as yunchang's modules see it: same calls, bytes and counts recorded."""

    def __getattr__(self, name):
        return getattr(dist, name)

    def all_to_all_single(self, out, inp, group=None, **kw):
        s = _Hooks.stats
        t0 = time.perf_counter()
        work = dist.all_to_all_single(out, inp, group=group, **kw)
        if s is not None:
            w = dist.get_world_size(group)
            s.bytes_sent += nbytes(inp) * (w - 1) // w
            s.calls["a2a"] += 1
            s.wait_s += time.perf_counter() - t0
        return work

    def batch_isend_irecv(self, ops):
        s = _Hooks.stats
        if s is not None:
            s.bytes_sent += sum(nbytes(op.tensor) for op in ops if op.op is dist.isend)
            s.calls["ring_p2p"] += 1
        return dist.batch_isend_irecv(ops)


def _timed(fn: Callable) -> Callable:
    def call(*args, **kwargs):
        if _Hooks.timer is None:
            return fn(*args, **kwargs)
        with _Hooks.timer:
            return fn(*args, **kwargs)

    return call


_PATCHED: dict = {}


def _patch_yunchang() -> None:
    """Route yunchang's kernel lookups (timing; lcab block kernels) and its torch.distributed
    calls (byte counting) through lcab. Behaviour is otherwise unchanged; done once."""
    if _PATCHED:
        return
    import yunchang.comm.all_to_all as a2a
    import yunchang.ring.ring_flash_attn as basic
    import yunchang.ring.utils as rutils
    import yunchang.ring.zigzag_ring_flash_attn as zigzag

    counting = _CountingDist()
    for mod in (a2a, rutils):
        mod.dist = counting
    for mod in (basic, zigzag):
        original = mod.select_flash_attn_impl

        def select(impl_type, stage="fwd-bwd", attn_processor=None, _orig=original):
            if isinstance(impl_type, LcabBlockKernel):
                return _timed(impl_type.fwd if stage == "fwd-only" else impl_type.bwd)
            return _timed(_orig(impl_type, stage, attn_processor))

        mod.select_flash_attn_impl = select
    _PATCHED["done"] = True


_GROUPS: dict = {}


def yunchang_groups(ud: int, rd: int, intra: bool) -> tuple:
    """set_seq_parallel_pg's (Ulysses, ring) groups of this rank; collective, created once per
    mesh layout and never changed afterwards."""
    from yunchang import set_seq_parallel_pg
    from yunchang.globals import PROCESS_GROUP

    rank, world = dist.get_rank(), dist.get_world_size()
    key = (ud, rd, world, intra)
    if key not in _GROUPS:
        set_seq_parallel_pg(ud, rd, rank, world, use_ulysses_low=intra)
        _GROUPS[key] = (PROCESS_GROUP.ULYSSES_PG, PROCESS_GROUP.RING_PG)
    return _GROUPS[key]


def _layer(groups: tuple, ring_impl: str, attn_type):
    """A LongContextAttention on the cell's groups (it reads yunchang's globals when built)."""
    from yunchang import LongContextAttention
    from yunchang.globals import PROCESS_GROUP

    PROCESS_GROUP.ULYSSES_PG, PROCESS_GROUP.RING_PG = groups
    return LongContextAttention(ring_impl_type=ring_impl, attn_type=attn_type)


def yunchang_layout(kind: str, seqlen: int, topo: Topology) -> Shard:
    """yunchang's extract_local layouts as per-rank global token ranges."""
    r, w = topo.deg.ring, topo.world
    if kind == "basic":
        if seqlen % w:
            raise Unsupported(f"yunchang's basic layout needs seqlen {seqlen} divisible by world {w}")
        n = seqlen // w
        return shard_from_ranges(
            "yunchang_basic", seqlen, [[(g * n, (g + 1) * n)] for g in range(w)], {"split": "even"}
        )
    if seqlen % (2 * w):
        raise Unsupported(f"yunchang's zigzag layout needs seqlen {seqlen} divisible by 2 x world {2 * w}")
    c, part = seqlen // (2 * r), seqlen // w
    ranges = []
    for g in range(w):
        ring_i, uly_j = topo.coords(g)
        # The ring member's two chunks back to back, cut into U equal parts.
        tokens = [(ring_i * c, (ring_i + 1) * c), ((2 * r - 1 - ring_i) * c, (2 * r - ring_i) * c)]
        lo, hi, pos, mine = uly_j * part, (uly_j + 1) * part, 0, []
        for a, b in tokens:
            s, e = max(a, a + lo - pos), min(b, a + hi - pos)
            if e > s:
                mine.append((s, e))
            pos += b - a
        ranges.append(mine)
    return shard_from_ranges("yunchang_zigzag", seqlen, ranges, {"split": "even"})


class YunchangUsp(Strategy):
    name = "yunchang_usp"
    summary = "peer: yunchang's LongContextAttention (USP), its groups, all-to-all, ring and merge"
    cannot_emulate = "yunchang_usp is a peer implementation; cp.emulate runs lcab's strategies only"

    config = MeshCPConfig

    def degrees(self, cp: MeshCPConfig, world: int) -> Degrees:
        return mesh_degrees(cp, world, self.name)

    def process_groups(self, topo: Topology, source: str, device: torch.device) -> dict:
        d = topo.deg
        return {
            **super().process_groups(topo, source, device),
            "yunchang": yunchang_groups(d.ulysses, d.ring, topo.intra),
        }

    def check(self, cp: Mapping | MeshCPConfig, shape: ShapeSpec, world: int) -> Degrees:
        try:
            import yunchang  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"yunchang_usp needs the yunchang package ({exc})") from exc
        return super().check(cp, shape, world)

    def plan(
        self, mask: AttnMask, shard: Shard, topo: Topology, kernel: Kernel, shape: ShapeSpec
    ) -> YunchangPlan:
        from yunchang.kernels import AttnType

        kind = full_or_causal_only(mask, self.name)
        if shard.name not in ("contiguous", "zigzag"):
            raise Unsupported(
                f"yunchang_usp lays tokens out its own way: cp.shard contiguous or zigzag, not {shard.name}"
            )
        layout = "basic" if shard.name == "contiguous" else "zigzag"
        ring_impl = "zigzag" if layout == "zigzag" and kind == "causal" else "basic"
        mine = yunchang_layout(layout, mask.seqlen_q, topo)
        attn_name = YUNCHANG_ATTN.get(kernel.name, "lcab")
        ls = local_shape(shape, topo.deg)
        rep = topo.deg.kv_replicas
        notes, no_backward = {}, ""
        if attn_name == "lcab":
            cache = StepCache(kernel, ls)
            attn = LcabBlockKernel(cache, ls)
            n = mine.local_len * topo.deg.ulysses  # tokens per ring member after the all-to-all
            blocks = [(n, n, kind == "causal"), (n, n, False)]
            if ring_impl == "zigzag":
                blocks += [(n, n // 2, False), (n // 2, n, False)]
            for lq, lk, c in blocks:
                attn.fns(lq, lk, c)  # build step functions outside timing
            notes["step_forms"] = sorted(cache.forms)
            notes["yunchang_attn"] = (
                f"lcab {kernel.name} step kernel in yunchang's select_flash_attn_impl slot"
            )
        else:
            if attn_name in ("FA", "FA3") and shape.device.type != "cuda":
                raise Unavailable(f"yunchang AttnType.{attn_name} needs CUDA")
            if attn_name.startswith("TORCH_"):
                if ring_impl == "zigzag":
                    raise Unsupported(f"yunchang's zigzag ring has no AttnType.{attn_name} path")
                if attn_name in ZERO_LSE and topo.deg.ring > 1:
                    raise Unsupported(
                        f"yunchang 0.6.4's AttnType.{attn_name} returns lse = 0, so its ring merge is "
                        "wrong for ring degree > 1"
                    )
                no_backward = NO_BACKWARD
                rep = shape.heads_q // shape.heads_kv  # the aten ops take MHA only
                notes["kv_heads_replicated_to"] = shape.heads_q
            attn = getattr(AttnType, attn_name)
            notes["yunchang_attn"] = f"AttnType.{attn_name}"
        if shape.dtype in (torch.float32, torch.float64):
            no_backward = no_backward or FP32_BWD
        elif ring_impl == "basic" and shape.dtype != torch.bfloat16:
            notes["yunchang_dq_bf16"] = "basic ring backward returns dq.to(torch.bfloat16) (yunchang 0.6.4)"
        if topo.deg.ring == 1 and shape.device.type == "cpu":
            no_backward = no_backward or SELF_SEND
        notes["yunchang_ring_impl"] = ring_impl
        notes["yunchang_layout"] = f"{layout}_extract_local"
        group = [r for r in range(topo.world) if topo.coords(r)[0] == topo.ring_index]
        return YunchangPlan(
            shard=mine,
            topo=topo,
            heads_q=ls.heads_q,
            heads_kv=ls.heads_kv,
            area=sum(mine.row_area(mask, r) for r in group) / topo.deg.ulysses,
            notes=notes,
            no_backward=no_backward,
            attn=attn,
            ring_impl=ring_impl,
            rep=rep,
            causal=kind == "causal",
        )

    def attention(self, q, k, v, plan: YunchangPlan, ctx: RunCtx) -> torch.Tensor:
        _patch_yunchang()
        # Built per call (cheap: it keeps references) on this cell's groups, never kept in the plan.
        layer = _layer(ctx.groups["yunchang"], plan.ring_impl, plan.attn)
        if plan.rep > 1:
            k = k.repeat_interleave(plan.rep, 2)
            v = v.repeat_interleave(plan.rep, 2)
        # The backward that follows reports to the same run (one RunCtx per cell).
        _Hooks.stats, _Hooks.timer = ctx.comm.stats, ctx.timer
        return layer(q, k, v, causal=plan.causal)
