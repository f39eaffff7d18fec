"""Typed config schemas (registered in Hydra's ConfigStore) and the constraint checks on them.

Hydra rejects unknown keys and wrong types against these dataclasses; `check()` rejects
values that type-check but make no sense, with one line that names the constraint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


class ConfigError(ValueError):
    """A user-facing constraint violation: its message is one line that names the constraint."""


@dataclass
class KernelConfig:
    name: str = "sdpa"
    # FlexAttention: BlockMask tile, whether to torch.compile the kernel, and whether the compile
    # is for symbolic sequence lengths (one compile per mask pattern instead of per pattern x seqlen).
    block_size: int = 128
    compile: bool = True
    dynamic: bool = False


@dataclass
class MaskConfig:
    name: str = "causal"
    seed: int = 0
    window: int = 1024  # sliding windows and global_sliding_window's global prefix
    prefix: float = 0.5  # prefix_lm_*: prefix as a fraction of the sequence or document
    block: int = 1024  # block_causal_document: block length
    max_blocks_per_doc: int = 8  # block_causal_document: docs of 1..N blocks
    sparse_block: int = 128  # block_sparse: tile size
    density: float = 0.5  # block_sparse: kept fraction of key blocks per query block
    doc_table: str = "default"  # document-length distribution table (lcab/masks/data/<name>.csv)
    long_doc_frac: float = 0.0  # fraction of docs drawn from [long_min, long_max] (paper: 0.6)
    long_min: int = 8192
    long_max: int = 30720
    max_doc_frac: float = 0.25  # split documents longer than this fraction of S


@dataclass
class CPConfig:
    name: str = "none"
    ulysses_degree: int = 1
    ring_degree: int = 1
    shard: str = "zigzag"  # contiguous | zigzag | doc_zigzag | balanced
    ulysses_intra_node: bool = True
    windows: int = 0  # double_ring window count; 0 = LoongTrain's rule
    groups: str = "mesh"  # mesh | megatron
    emulate: int = 0  # >0: run every rank's compute of world W on one device
    busbw: bool = True  # after timing, each kind of collective alone: algbw / busbw per kind


@dataclass
class ShapeConfig:
    # "auto": the paper's 64:8:8 d128 bf16 on GPU, a small fp32 shape on CPU.
    preset: str = "auto"
    batch: int = 1
    heads_q: int = 0  # 0 = from preset
    heads_kv: int = 0
    head_dim: int = 0
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32 | fp64


@dataclass
class BenchConfig:
    mode: str = "fwd_bwd"  # fwd | bwd | fwd_bwd
    warmup: int = 5
    iters: int = 20  # timed calls (the most, when budget_ms > 0)
    budget_ms: float = 0.0  # >0: size warmup/iters so timed calls take about this (harness/timing.py)
    min_iters: int = 3  # adaptive schedule: never fewer timed calls
    max_spread: float = 0.02  # adaptive schedule: time more calls while p20..p80 / p50 is above this
    extend_ms: float = 0.0  # adaptive schedule: ...but only while all timed calls fit in this; 0 = no cap
    l2_flush: bool = True
    l2_flush_mb: int = 256
    verify: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    timeout_s: float = 0.0  # per-cell wall limit; 0 = none


@dataclass
class ClusterConfig:
    name: str = "local"
    nproc: int = 1
    backend: str = "auto"  # auto | gloo | nccl
    gpus_per_node: int = 8
    nodes: int = 1
    tasks_per_node: int = 1
    partition: str = ""
    account: str = ""
    time_min: int = 60
    setup: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "lcab"
    entity: str = ""
    mode: str = ""  # "" = WANDB_MODE or offline
    group: str = ""  # "" = the sweep's directory name
    dir: str = ""  # "" = the run's output dir


@dataclass
class Config:
    kernel: KernelConfig = field(default_factory=KernelConfig)
    cp: CPConfig = field(default_factory=CPConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seqlen: str = "auto"  # 4k, 32K, 1m, 4096; auto = 16k on GPU, 1k on CPU
    store: str = ""  # results JSONL; "" = results.jsonl in the sweep (or run) dir
    resume: bool = True  # skip cells already ok in the store
    rerun_failed: bool = False


_SEQLEN = re.compile(r"^\s*(\d+)\s*([kKmM]?)\s*$")


def parse_seqlen(text: str | int) -> int:
    """'4k' -> 4096, '32K' -> 32768, '1m' -> 1048576, '4096' -> 4096."""
    m = _SEQLEN.match(str(text))
    if not m:
        raise ConfigError(f"seqlen '{text}' is not a length like 4096, 4k, 32K or 1m")
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if n <= 0:
        raise ConfigError(f"seqlen '{text}' must be positive")
    return n


DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp64": "float64"}
BENCH_MODES = ("fwd", "bwd", "fwd_bwd")
# Presets: (heads_q, heads_kv, head_dim, dtype) per device type.
SHAPE_PRESETS = {
    "paper": (64, 8, 128, "bf16"),
    "small": (4, 2, 32, "fp32"),
}


@dataclass(frozen=True)
class ResolvedShape:
    batch: int
    heads_q: int
    heads_kv: int
    head_dim: int
    dtype: str  # short name: bf16 | fp16 | fp32 | fp64


def resolve_shape(cfg: ShapeConfig, device_type: str) -> ResolvedShape:
    preset = cfg.preset
    if preset == "auto":
        preset = "paper" if device_type == "cuda" else "small"
    if preset not in SHAPE_PRESETS:
        raise ConfigError(f"shape.preset '{preset}' is not one of auto, {', '.join(SHAPE_PRESETS)}")
    hq, hkv, d, dt = SHAPE_PRESETS[preset]
    shape = ResolvedShape(
        batch=cfg.batch,
        heads_q=cfg.heads_q or hq,
        heads_kv=cfg.heads_kv or hkv,
        head_dim=cfg.head_dim or d,
        dtype=dt if cfg.dtype == "auto" else cfg.dtype,
    )
    if shape.dtype not in DTYPES:
        raise ConfigError(f"shape.dtype '{shape.dtype}' is not one of auto, {', '.join(DTYPES)}")
    if min(shape.batch, shape.heads_q, shape.heads_kv, shape.head_dim) <= 0:
        raise ConfigError(f"shape sizes must be positive, got {shape}")
    if shape.heads_q % shape.heads_kv:
        raise ConfigError(f"heads_q {shape.heads_q} is not divisible by heads_kv {shape.heads_kv}")
    return shape


def resolve_seqlen(text: str, device_type: str) -> int:
    if str(text) == "auto":
        return 16384 if device_type == "cuda" else 1024
    return parse_seqlen(text)


def check_bench(cfg: BenchConfig) -> None:
    if cfg.mode not in BENCH_MODES:
        raise ConfigError(f"bench.mode '{cfg.mode}' is not one of {', '.join(BENCH_MODES)}")
    if cfg.iters < 1 or cfg.warmup < 0:
        raise ConfigError(f"bench.iters must be >= 1 and bench.warmup >= 0, got {cfg.iters}, {cfg.warmup}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"bench.device '{cfg.device}' is not one of auto, cpu, cuda")


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="lcab_schema", node=Config)
    for group, node in (
        ("kernel", KernelConfig),
        ("cp", CPConfig),
        ("mask", MaskConfig),
        ("shape", ShapeConfig),
        ("bench", BenchConfig),
        ("cluster", ClusterConfig),
        ("logger", LoggerConfig),
    ):
        cs.store(group=group, name=f"{group}_schema", node=node)
