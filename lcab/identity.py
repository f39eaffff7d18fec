"""A cell's id: the sha1 of what it measures, declared per component so that a new config field
does not change the id of any cell recorded before it existed (a store made then still resumes).

Version 1 froze the fields every id hashed when the rule was written (the field lists of the
committed stores docs/results/h100/paper_kernels and docs/results/h200_cp_emulate). A v1 field is
always hashed; a component that no longer carries one (an option whose schema lacks it, such as a
Flex-only field under kernel=sdpa) hashes the value it was measured with then. A field added later
is declared in LATER with the default it was introduced with and hashed only when set to something
else; a field that says how or where a cell runs is declared in NOT_MEASURED and never hashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

# component -> {field: the value a v1 cell measured with when the component lacks the field}
V1: dict[str, dict[str, object]] = {
    "": {"seqlen": "auto", "world": 1},  # top-level values, always present in a planned cell
    "kernel": {"name": "sdpa", "block_size": 128, "compile": True, "dynamic": False},
    "cp": {
        "name": "none",
        "ulysses_degree": 1,
        "ring_degree": 1,
        "shard": "zigzag",
        "ulysses_intra_node": True,
        "windows": 0,
        "groups": "mesh",
        "emulate": 0,
    },
    "mask": {
        "name": "causal",
        "seed": 0,
        "window": 1024,
        "prefix": 0.5,
        "block": 1024,
        "max_blocks_per_doc": 8,
        "sparse_block": 128,
        "density": 0.5,
        "doc_table": "default",
        "long_doc_frac": 0.0,
        "long_min": 8192,
        "long_max": 30720,
        "max_doc_frac": 0.25,
    },
    # The resolved shape (plan.resolve_shape): always all five.
    "shape": {"batch": 1, "heads_q": 0, "heads_kv": 0, "head_dim": 0, "dtype": "auto"},
    "bench": {
        "mode": "fwd_bwd",
        "warmup": 5,
        "iters": 20,
        "budget_ms": 0.0,
        "min_iters": 3,
        "max_spread": 0.02,
        "extend_ms": 0.0,
        "l2_flush": True,
        "l2_flush_mb": 256,
        "verify": False,
        "seed": 0,
        "device": "auto",  # resolved to cpu | cuda by the plan
        "timeout_s": 0.0,
    },
}

# component -> {field: its default when it was added}; hashed only when set to another value.
# Add a field here when it changes what is measured; never change a default recorded here.
LATER: dict[str, dict[str, object]] = {
    "kernel": {"mask_mod": None},  # flex: null = the mask's own form (what v1 cells measured)
    # ulysses / usp: v1 cells exchanged by NCCL all_to_all_single, unchunked (today's defaults).
    "cp": {"head_chunks": 1, "exchange": "all_to_all"},
}

# How or where a cell runs or is logged, not what it measures. Top-level keys under "".
NOT_MEASURED: dict[str, tuple[str, ...]] = {
    "": ("logger", "store", "resume", "rerun_failed", "cluster"),
    # After the timed calls, each kind of collective alone: the timed calls are the same.
    "cp": ("busbw",),
}


_NO_DEFAULT = object()


def _component(name: str, values: Mapping, defaults: Mapping[str, object]) -> dict:
    """A component's hashed fields: every v1 field, then later (or undeclared) fields off their
    default. An undeclared field falls back to its schema default (tests/test_cell_identity.py
    asks that every schema field be declared)."""
    skip = NOT_MEASURED.get(name, ())
    out = {f: values.get(f, v1) for f, v1 in V1.get(name, {}).items()}
    later = LATER.get(name, {})
    for f, v in values.items():
        if f in out or f in skip:
            continue
        introduced = later.get(f, defaults.get(f, _NO_DEFAULT))
        if v != introduced:
            out[f] = v
    return out


def identity(config: Mapping, schema_defaults: Mapping[str, Mapping[str, object]] | None = None) -> dict:
    """What a cell measures, from its resolved config (Cell.config, or a stored row's config)."""
    schema_defaults = schema_defaults or {}
    top = {k: v for k, v in config.items() if k not in NOT_MEASURED[""]}
    out = _component(
        "", {k: v for k, v in top.items() if not isinstance(v, Mapping)}, schema_defaults.get("", {})
    )
    for key, value in top.items():
        if isinstance(value, Mapping):
            fields = _component(key, value, schema_defaults.get(key, {}))
            if fields or key in V1:  # a new group left at its defaults adds nothing
                out[key] = fields
    return out


def cell_id(config: Mapping, schema_defaults: Mapping[str, Mapping[str, object]] | None = None) -> str:
    ident = identity(config, schema_defaults)
    return hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
