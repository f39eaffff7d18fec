"""Hydra's flags anywhere on the command line: `... mask=causal_doc -m seqlen=8k,16k`.

Hydra parses its command line with argparse, whose override list (`nargs="*"`) must be one
contiguous run: an override after a flag that follows other overrides is "unrecognized".
Users put `-m` (and `--cfg job`, `--info`) anywhere, so before Hydra sees the arguments every
flag moves, with its value, in front of the overrides; the order within each kind is kept.
The flags and which of them take a value come from Hydra's own parser, so this stays in step
with Hydra. Tokens after a literal `--` are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from hydra._internal.utils import get_args_parser


@dataclass(frozen=True)
class Flag:
    """One of Hydra's flags: `nargs` 0 (a switch), None (one value) or "?" (an optional value)."""

    name: str
    nargs: int | str | None
    choices: tuple[str, ...]
    const: str | None


@cache
def _flags() -> dict[str, Flag]:
    parser = get_args_parser()
    flags: dict[str, Flag] = {}
    for action in parser._actions:  # argparse keeps no public list of a parser's actions
        for opt in action.option_strings:
            flags[opt] = Flag(
                action.option_strings[0], action.nargs, tuple(action.choices or ()), action.const
            )
    return flags


def _flag(token: str) -> Flag | None:
    """The flag a token names: exactly, or (as argparse allows) a unique prefix of a long flag."""
    flags = _flags()
    if token in flags:
        return flags[token]
    if token.startswith("--"):
        hits = {f.name for opt, f in flags.items() if opt.startswith("--") and opt.startswith(token)}
        if len(hits) == 1:
            return flags[hits.pop()]
    return None


def normalize(argv: list[str]) -> list[str]:
    """Hydra's flags (with their values) first, then the overrides, each in the given order."""
    flags: list[str] = []
    overrides: list[str] = []
    missing: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            rest = argv[i:]
            break
        if not token.startswith("-") or token == "-":
            overrides.append(token)
            i += 1
            continue
        flag = None if "=" in token else _flag(token)
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if flag is None or flag.nargs == 0:
            flags.append(token)  # a switch, `--flag=value`, or unknown (Hydra names the error)
        elif flag.nargs == "?":
            if nxt is not None and nxt in flag.choices:
                flags += [token, nxt]
                i += 1
            else:
                # Bare: at the front it would take the first override as its value.
                flags.append(f"{flag.name}={flag.const}")
        elif nxt is not None and nxt != "--":
            flags += [token, nxt]
            i += 1
        else:
            missing.append(token)  # its value is missing: last, so Hydra says so
        i += 1
    return flags + overrides + missing + rest
