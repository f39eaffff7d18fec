"""Typed config schemas (registered in Hydra's ConfigStore) and the constraint checks on them.

Hydra rejects unknown keys and wrong types against these dataclasses; `check()` rejects
values that type-check but make no sense, with one line that names the constraint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields

from hydra.core.config_store import ConfigStore

from lcab.errors import SCHEMA_SUFFIX, ConfigError  # ConfigError: also re-exported from here


@dataclass
class KernelConfig:
    """A kernel option with no options of its own (kernel/<name>.yaml: `- kernel_schema`)."""

    name: str = "sdpa"


@dataclass
class FlexConfig(KernelConfig):
    """kernel=flex (`- flex_schema`): BlockMask tile, whether to torch.compile the kernel,
    whether the compile is for symbolic sequence lengths (one compile per mask pattern instead of
    per pattern x seqlen), and the mask_mod form (lcab.masks.flex.FORMS; null = the mask's own)."""

    name: str = "flex"
    block_size: int = 128
    compile: bool = True
    dynamic: bool = False
    mask_mod: str | None = None


@dataclass
class MaskConfig:
    """A mask pattern with no parameters of its own (mask/<name>.yaml: `- mask_schema`)."""

    name: str = "causal"
    seed: int = 0


@dataclass
class WindowMaskConfig(MaskConfig):
    """sliding_window, sliding_window_causal, global_sliding_window (also its global prefix)."""

    window: int = 1024


@dataclass
class PrefixMaskConfig(MaskConfig):
    """prefix_lm_causal: prefix as a fraction of the sequence."""

    prefix: float = 0.5


@dataclass
class DocMaskConfig(MaskConfig):
    """Patterns over sampled documents (lcab/masks/documents.py: sample_doc_lens)."""

    doc_table: str = "default"  # document-length distribution table (lcab/masks/data/<name>.csv)
    long_doc_frac: float = 0.0  # fraction of docs drawn from [long_min, long_max] (paper: 0.6)
    long_min: int = 8192
    long_max: int = 30720
    max_doc_frac: float = 0.25  # split documents longer than this fraction of S


@dataclass
class PrefixDocMaskConfig(DocMaskConfig):
    """prefix_lm_document: each document's prefix as a fraction of its length."""

    prefix: float = 0.5


@dataclass
class BlockDocMaskConfig(MaskConfig):
    """block_causal_document: documents of 1..max_blocks_per_doc whole blocks."""

    block: int = 1024
    max_blocks_per_doc: int = 8


@dataclass
class BlockSparseMaskConfig(MaskConfig):
    """block_sparse: tile size and the kept fraction of key blocks per query block."""

    sparse_block: int = 128
    density: float = 0.5


@dataclass
class CPConfig:
    """What every strategy reads (cp/<name>.yaml: `- cp_schema` when it has no degrees of its own).
    A strategy names its schema in its class (Strategy.config); degrees left at 0 mean "the rest
    of the world", as each strategy's degrees() reads them."""

    name: str = "none"
    shard: str = "zigzag"  # contiguous | zigzag | doc_zigzag | balanced
    groups: str = "mesh"  # mesh | megatron
    emulate: int = 0  # >0: run every rank's compute of world W on one device
    busbw: bool = True  # after timing, each kind of collective alone: algbw / busbw per kind


@dataclass
class RingCPConfig(CPConfig):
    """One ring over the world (`- ring_schema`): ring, ring_allgather, torch_ring."""

    ring_degree: int = 0  # 0 = the whole world


@dataclass
class HeadExchangeConfig:
    """How a pure Ulysses group moves heads (ulysses; usp, whose ring degree must be 1 for chunks)."""

    # Exchange in this many head chunks, each in flight during the previous chunk's attention
    # (lcab.cp.head_pipeline); 1 = no overlap; 0 = the largest divisor of a rank's kv heads up to 4.
    head_chunks: int = 1
    # all_to_all (NCCL all_to_all_single, DeepSpeed's) | pairwise (p2p; lcab.cp.head_exchange):
    # equal within noise on two H200s (docs/results/h200x2), so the default stays the standard one.
    exchange: str = "all_to_all"


@dataclass
class UlyssesCPConfig(HeadExchangeConfig, CPConfig):
    """All-to-all over heads (`- ulysses_schema`)."""

    ulysses_degree: int = 0  # 0 = the whole world


@dataclass
class MeshCPConfig(CPConfig):
    """A 2-D Ulysses x ring mesh (`- mesh_schema`): usp, yunchang_usp."""

    ulysses_degree: int = 0  # 0 = world / ring_degree
    ring_degree: int = 0  # 0 = world / ulysses_degree
    ulysses_intra_node: bool = True  # Ulysses groups on consecutive ranks (one node), ring across


@dataclass
class UspCPConfig(HeadExchangeConfig, MeshCPConfig):
    """usp (`- usp_schema`): cp.exchange for its Ulysses dimension; with ring degree 1 it is Ulysses
    and takes cp.head_chunks as Ulysses does."""


@dataclass
class DoubleRingCPConfig(MeshCPConfig):
    """LoongTrain's double ring (`- double_ring_schema`): a mesh whose ring is cut into windows."""

    ulysses_degree: int = 1
    windows: int = 0  # 0 = LoongTrain's rule


# cp/<schema>_schema: shared by the strategies whose class names it (Strategy.config).
CP_SCHEMAS: dict[str, type[CPConfig]] = {
    "ring": RingCPConfig,
    "ulysses": UlyssesCPConfig,
    "mesh": MeshCPConfig,
    "usp": UspCPConfig,
    "double_ring": DoubleRingCPConfig,
}


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
# Kernels index tokens with int32 (cu_seqlens, offsets): a longer sequence cannot be expressed,
# and document sampling or planning for it would run for hours before any kernel said so.
MAX_SEQLEN = 2**31 - 1


def parse_seqlen(text: str | int) -> int:
    """'4k' -> 4096, '32K' -> 32768, '1m' -> 1048576, '4096' -> 4096."""
    m = _SEQLEN.match(str(text))
    if not m:
        raise ConfigError(f"seqlen '{text}' is not a length like 4096, 4k, 32K or 1m")
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if n <= 0:
        raise ConfigError(f"seqlen '{text}' must be positive")
    if n > MAX_SEQLEN:
        raise ConfigError(f"seqlen '{text}' is {n} tokens, above the int32 limit 2^31-1 of every kernel")
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


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _one_of(key: str, value: str, options: tuple[str, ...]) -> None:
    _require(value in options, f"{key} '{value}' is not one of {', '.join(options)}")


def _at_least(key: str, value: float, low: float) -> None:
    _require(math.isfinite(value) and value >= low, f"{key} must be >= {low:g}, got {value}")


def _fraction(key: str, value: float, open_low: bool = False) -> None:
    low_ok = value > 0.0 if open_low else value >= 0.0
    _require(low_ok and value <= 1.0, f"{key} must be in {'(' if open_low else '['}0, 1], got {value}")


SEED_LIMIT = 2**63  # numpy and torch generators take seeds in [0, 2^63)


def _seed(key: str, value: int) -> None:
    _require(0 <= value < SEED_LIMIT, f"{key} must be in [0, 2^63), got {value}")


def check_kernel(cfg: KernelConfig) -> None:
    if "block_size" in cfg:  # the options of kernel=flex (FlexConfig)
        _at_least("kernel.block_size", cfg.block_size, 1)
    if cfg.get("mask_mod") is not None:
        from lcab.masks.flex import FORMS  # lazy: the masks package imports this module

        _one_of("kernel.mask_mod", cfg.mask_mod, tuple(FORMS))


def check_bench(cfg: BenchConfig) -> None:
    _one_of("bench.mode", cfg.mode, BENCH_MODES)
    if cfg.iters < 1 or cfg.warmup < 0:
        raise ConfigError(f"bench.iters must be >= 1 and bench.warmup >= 0, got {cfg.iters}, {cfg.warmup}")
    _one_of("bench.device", cfg.device, ("auto", "cpu", "cuda"))
    _at_least("bench.min_iters", cfg.min_iters, 1)
    for key in ("budget_ms", "max_spread", "extend_ms", "timeout_s", "l2_flush_mb"):
        _at_least(f"bench.{key}", getattr(cfg, key), 0)
    _seed("bench.seed", cfg.seed)


def check_mask(cfg: MaskConfig) -> None:
    """The parameters the pattern's schema carries (the defaults all pass)."""
    for key in ("window", "block", "max_blocks_per_doc", "sparse_block", "long_min"):
        if _has(cfg, key):
            _at_least(f"mask.{key}", getattr(cfg, key), 1)
    if _has(cfg, "long_max"):
        _require(
            cfg.long_max >= cfg.long_min,
            f"mask.long_max must be >= mask.long_min, got {cfg.long_max} < {cfg.long_min}",
        )
    for key, open_low in (
        ("prefix", False),
        ("long_doc_frac", False),
        ("density", True),
        ("max_doc_frac", True),
    ):
        if _has(cfg, key):
            _fraction(f"mask.{key}", getattr(cfg, key), open_low=open_low)
    _seed("mask.seed", cfg.seed)
    if _has(cfg, "doc_table"):
        from lcab.masks.documents import table_names  # lazy: the masks package imports this module

        _one_of("mask.doc_table", cfg.doc_table, tuple(table_names()))


def _has(cfg: object, key: str) -> bool:
    """Whether the option's schema has the field (a dataclass, or a composed struct node)."""
    return hasattr(cfg, key)


def check_cp(cfg: CPConfig) -> None:
    for key in ("ulysses_degree", "ring_degree", "windows", "emulate"):
        if _has(cfg, key):  # the degrees the strategy's schema carries
            _at_least(f"cp.{key}", getattr(cfg, key), 0)
    from lcab.cp.sharding import SHARDS  # lazy: lcab.cp imports this module

    _one_of("cp.shard", cfg.shard, SHARDS)
    _one_of("cp.groups", cfg.groups, ("mesh", "megatron"))


def check_cluster(cfg: ClusterConfig) -> None:
    _one_of("cluster.backend", cfg.backend, ("auto", "gloo", "nccl"))
    for key in ("nproc", "nodes", "tasks_per_node", "time_min"):
        _at_least(f"cluster.{key}", getattr(cfg, key), 1)
    _at_least("cluster.gpus_per_node", cfg.gpus_per_node, 0)


def check_logger(cfg: LoggerConfig) -> None:
    _one_of("logger.mode", cfg.mode, ("", "online", "offline", "disabled"))


def check_values(cfg: Config) -> None:
    """Values that type-check but make no sense; one line naming the first one found."""
    check_kernel(cfg.kernel)
    check_bench(cfg.bench)
    check_mask(cfg.mask)
    check_cp(cfg.cp)
    check_cluster(cfg.cluster)
    check_logger(cfg.logger)


def check_choices(choices: Mapping[str, str | None], options: Callable[[str], list[str]]) -> None:
    """One option per group, and never a schema: a schema is registered in its group (so YAML
    files can extend it) but runs nothing of its own (kernel=kernel_schema would run sdpa)."""
    if not choices:
        return  # composed outside a Hydra app: nothing recorded to check
    for group in GROUPS:
        picked = choices.get(group)
        if picked and not picked.endswith(SCHEMA_SUFFIX):
            continue
        listed = ", ".join(o for o in options(group) if not o.endswith(SCHEMA_SUFFIX))  # slow: errors only
        if not picked:  # kernel=[sdpa,flex] merges two files into one; ~kernel leaves the schema
            raise ConfigError(
                f"{group} takes one option (one of {listed}); sweep several with -m {group}=a,b"
            )
        raise ConfigError(f"{group}={picked} is not an option; {group} is one of {listed}")


GROUPS = {
    "kernel": KernelConfig,
    "cp": CPConfig,
    "mask": MaskConfig,
    "shape": ShapeConfig,
    "bench": BenchConfig,
    "cluster": ClusterConfig,
    "logger": LoggerConfig,
}


def schema_defaults() -> dict[str, dict[str, object]]:
    """Each group's field defaults (top level under ""): what an undeclared field is compared to
    when it is left out of a cell's identity (lcab/identity.py)."""
    out: dict[str, dict[str, object]] = {"": _defaults(Config)}
    for group in GROUPS:
        out[group] = {k: v for node in group_schemas(group) for k, v in _defaults(node).items()}
    return out


def _defaults(node: type) -> dict[str, object]:
    out = {}
    for f in fields(node):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


@dataclass(frozen=True)
class CellSpec:
    """A planned cell's config as the schemas' dataclasses (lcab.plan.Cell.spec): the defaults
    live in the schemas, not restated by each reader with `.get(key, default)`."""

    kernel: KernelConfig  # the option's own schema: FlexConfig for kernel=flex
    cp: CPConfig
    mask: MaskConfig
    shape: ResolvedShape
    bench: BenchConfig  # device resolved: cpu | cuda
    cluster: ClusterConfig
    logger: LoggerConfig
    seqlen: int
    world: int


def typed(group: str, values: Mapping):
    """One group's values as its option's schema: keys it lacks are left out, defaults filled."""
    node = schema_for(group, values.get("name"))
    names = {f.name for f in fields(node)}
    return node(**{k: v for k, v in values.items() if k in names})


def cell_spec(config: Mapping) -> CellSpec:
    """The typed view of a resolved config dict; a key its schema lacks (a field of another era or
    option, in a stored row) is left out, a key it has not gets the schema's default."""

    return CellSpec(
        **{g: typed(g, config.get(g, {})) for g in GROUPS if g != "shape"},
        shape=ResolvedShape(**config["shape"]),
        seqlen=int(config["seqlen"]),
        world=int(config.get("world", 1)),
    )


# Schemas of options with fields of their own: <group>/<option>_schema (the option's YAML names it
# in its defaults list, so its keys are checked against it and no other option's).
OPTION_SCHEMAS: dict[str, dict[str, type]] = {
    "kernel": {"flex": FlexConfig},
    # Keyed by pattern name: an alias file (causal_doc.yaml) names its pattern's schema.
    "mask": {
        "sliding_window": WindowMaskConfig,
        "sliding_window_causal": WindowMaskConfig,
        "global_sliding_window": WindowMaskConfig,
        "prefix_lm_causal": PrefixMaskConfig,
        "prefix_lm_document": PrefixDocMaskConfig,
        "causal_document": DocMaskConfig,
        "full_document": DocMaskConfig,
        "share_question": DocMaskConfig,
        "causal_blockwise": DocMaskConfig,
        "block_causal_document": BlockDocMaskConfig,
        "block_sparse": BlockSparseMaskConfig,
    },
}


def schema_for(group: str, option: str | None) -> type:
    """The schema of one option of a group (its own, else the group's). A strategy names its
    schema in its own class, so a strategy added as one .py + one .yaml brings it along."""
    if group == "cp" and option:
        from lcab.cp import registry  # lazy: lcab.cp imports this module

        if option in registry.names():
            return registry.get(option).config
    return OPTION_SCHEMAS.get(group, {}).get(option or "", GROUPS[group])


def group_schemas(group: str) -> list[type]:
    """The group's base schema and its option schemas (each once)."""
    extra = CP_SCHEMAS.values() if group == "cp" else ()
    return list(dict.fromkeys([GROUPS[group], *OPTION_SCHEMAS.get(group, {}).values(), *extra]))


def mask_config(values: Mapping) -> MaskConfig:
    """A mask's values (a row's config["mask"], or name= plus parameters) as its pattern's schema;
    parameters the pattern does not read are left out."""
    return typed("mask", values)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="lcab_schema", node=Config)
    for group, node in GROUPS.items():
        cs.store(group=group, name=f"{group}{SCHEMA_SUFFIX}", node=node)
    for group, options in {**OPTION_SCHEMAS, "cp": CP_SCHEMAS}.items():
        for option, node in options.items():
            cs.store(group=group, name=f"{option}{SCHEMA_SUFFIX}", node=node)
