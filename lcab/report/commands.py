"""The `python -m lcab.run ...` command lines that produced a sweep, rebuilt from its rows' configs.

A row's own `command` field wins when present. Otherwise the resolved configs of one sweep
are turned back into overrides: a group choice (`kernel=flex`), the fields that differ from
that choice's YAML defaults (`mask.window=512`), and comma lists under `-m` for what varies.
When the sweep's cells are not one Cartesian product, it is split into several commands that
each are, so every command reproduces exactly the cells it lists.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from lcab import config as schema
from lcab.report.tables import seqlen_text

CONF = Path(__file__).resolve().parents[1] / "conf"
# Groups chosen by name on the command line, with their schema defaults.
GROUPS = {
    "kernel": schema.KernelConfig,
    "cp": schema.CPConfig,
    "mask": schema.MaskConfig,
    "bench": schema.BenchConfig,
    "cluster": schema.ClusterConfig,
    "logger": schema.LoggerConfig,
}
# Group whose YAML file is not named after its `name` field.
_FIXED_CHOICE = {"bench": "default"}
_SKIP = {("bench", "device")}  # resolved from `auto`; the environment says where it ran
_ALIASES = {"causal_document": "causal_doc", "full_document": "full_doc"}


def _choice_defaults(group: str, choice: str) -> dict:
    base = asdict(GROUPS[group]())
    path = CONF / group / f"{choice}.yaml"
    if not path.exists() and choice in _ALIASES:
        path = CONF / group / f"{_ALIASES[choice]}.yaml"
    if path.exists():
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if isinstance(loaded, dict):
            base.update({k: v for k, v in loaded.items() if k != "defaults"})
    return base


def _choice_name(group: str, choice: str) -> str:
    """The name a user types: the YAML file that holds this choice (an alias file when only it exists)."""
    if (CONF / group / f"{choice}.yaml").exists() or choice not in _ALIASES:
        return choice
    return _ALIASES[choice] if (CONF / group / f"{_ALIASES[choice]}.yaml").exists() else choice


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":")).replace('"', "'")
    if v is None:
        return "null"
    return str(v)


def _shape_override(shape: dict, device_type: str) -> list[tuple[str, str]]:
    if not shape:
        return []
    if "preset" in shape:  # not resolved (a config that failed its checks): overrides as given
        default = asdict(schema.ShapeConfig())
        out = [("shape", str(shape["preset"]))] if shape["preset"] != default["preset"] else []
        return out + [
            (f"shape.{k}", _value(v)) for k, v in shape.items() if k != "preset" and default.get(k) != v
        ]
    auto = "paper" if device_type == "cuda" else "small"
    fields = ("heads_q", "heads_kv", "head_dim", "dtype")
    best: list[tuple[str, str]] | None = None
    for preset in (auto, *[p for p in schema.SHAPE_PRESETS if p != auto]):
        base = dict(zip(fields, schema.SHAPE_PRESETS[preset], strict=True))
        out = [] if preset == auto else [("shape", preset)]
        out += [(f"shape.{k}", _value(shape[k])) for k in fields if k in shape and shape[k] != base[k]]
        if shape.get("batch", 1) != 1:
            out.append(("shape.batch", str(shape["batch"])))
        if best is None or len(out) < len(best):
            best = out  # the preset that needs the fewest overrides
    return best or []


def overrides(config: dict) -> list[tuple[str, str]]:
    """(key, value) overrides that recreate one resolved config from lcab/conf/config.yaml."""
    out: list[tuple[str, str]] = []
    top = (
        OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"))
        if (CONF / "config.yaml").exists()
        else {}
    )
    default_choice = {}
    for item in (top or {}).get("defaults", []):
        if isinstance(item, dict):
            default_choice.update(item)
    for group in GROUPS:
        node = config.get(group)
        if not isinstance(node, dict):
            continue
        choice = _FIXED_CHOICE.get(group) or str(node.get("name", ""))
        explicit = group in ("kernel", "mask") or choice != default_choice.get(group)
        if group not in _FIXED_CHOICE and choice and explicit:
            out.append((group, _choice_name(group, choice)))
        defaults = _choice_defaults(group, choice)
        for k, v in node.items():
            if k == "name" or (group, k) in _SKIP:
                continue
            if k not in defaults or defaults[k] != v:
                out.append((f"{group}.{k}", _value(v)))
    if "seqlen" in config:
        s = config["seqlen"]
        out.append(("seqlen", seqlen_text(s) if isinstance(s, int) else str(s)))
    out.extend(_shape_override(config.get("shape") or {}, (config.get("bench") or {}).get("device", "cpu")))
    if config.get("store"):
        out.append(("store", str(config["store"])))
    for k in ("resume", "rerun_failed"):
        if k in config and config[k] != getattr(schema.Config(), k):
            out.append((k, _value(config[k])))
    return out


def _commands_for(cells: list[dict[str, str]]) -> list[list[str]]:
    """The fewest commands whose overrides (one Cartesian product each) cover exactly these cells."""
    keys = list(dict.fromkeys(k for c in cells for k in c))
    for k in keys:
        # A field overridden in some cells only (its default differs per choice): split on presence.
        has = [c for c in cells if k in c]
        if 0 < len(has) < len(cells):
            return _commands_for(has) + _commands_for([c for c in cells if k not in c])
    unique = {tuple(sorted(c.items())) for c in cells}
    # Values in the order the sweep ran them (Hydra's order, for a sweep it launched).
    values = {k: list(dict.fromkeys(c[k] for c in cells)) for k in keys}
    varying = [k for k in keys if len(values[k]) > 1]
    if math.prod(len(values[k]) for k in varying) != len(unique):
        # Not one product (values that move together): split on the key that gives the fewest commands.
        options = [
            list(
                itertools.chain.from_iterable(
                    _commands_for([c for c in cells if c[k] == v]) for v in values[k]
                )
            )
            for k in varying
        ]
        return min(options, key=len)
    return [
        [
            "python",
            "-m",
            "lcab.run",
            *(["-m"] if varying else []),
            *(f"{k}={','.join(values[k])}" for k in keys),
        ]
    ]


def _derived(configs: list[dict], cells: list[dict[str, str]]) -> None:
    """Put back the resolvers of weak-scaling presets where the values follow them exactly.

    seqlen = n x world for one n across several worlds is `${lcab_per_gpu:n}`; nproc = 1 for
    cp=none and one n otherwise is `${lcab_cp_ranks:n}` (lcab/launch/resolvers.py).
    """
    # Only resolved configs have an int seqlen and world (an invalid-config row keeps what was typed).
    sized = all(isinstance(c.get("seqlen"), int) and isinstance(c.get("world", 1), int) for c in configs)
    worlds = {c.get("world", 1) for c in configs} if sized else set()
    per = {c["seqlen"] / max(c.get("world", 1), 1) for c in configs} if sized else set()
    if len(worlds) > 1 and len(per) == 1:
        n = int(per.pop())
        if n * min(worlds) == min(c["seqlen"] for c in configs):
            for cell in cells:
                cell["seqlen"] = f"'${{lcab_per_gpu:{seqlen_text(n)}}}'"
    cps = [(c.get("cp") or {}).get("name", "none") for c in configs]
    nprocs = {(c.get("cluster") or {}).get("nproc") for c, cp in zip(configs, cps) if cp != "none"}
    if "none" in cps and len(set(cps)) > 1 and len(nprocs) == 1:
        n = nprocs.pop()
        if all((c.get("cluster") or {}).get("nproc") == 1 for c, cp in zip(configs, cps) if cp == "none"):
            for cell in cells:
                cell["cluster.nproc"] = f"'${{lcab_cp_ranks:{n}}}'"


def sweep_commands(df: pd.DataFrame) -> list[dict]:
    """One entry per sweep: where it ran, its row count, and its command lines."""
    out = []
    key = df["sweep"].where(df["sweep"] != "", df["source"])
    for sweep, grp in df.groupby(key, sort=False):
        given = [c for c in dict.fromkeys(grp["command"]) if c]
        if given:
            cmds = given
        else:
            configs = [c for c in grp["config"] if isinstance(c, dict) and c]
            cells = [dict(overrides(c)) for c in configs]
            _derived(configs, cells)
            cmds = [" ".join(parts) for parts in _commands_for(cells)] if cells else []
        out.append(
            {
                "sweep": sweep,
                "rows": len(grp),
                "source": ", ".join(dict.fromkeys(grp["source"])),
                "commands": cmds,
            }
        )
    return out
