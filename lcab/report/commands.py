"""The `python -m lcab.run ...` commands of each sweep, from the Hydra overrides its rows record.

Every row holds its job's overrides after the sweep's expansion (`seqlen=512`) and the sweep's
as typed (lcab/results/overrides.py). The rows of one sweep become
`python -m lcab.run -m <common overrides> <key>=v1,v2,...`; when its cells are not one Cartesian
product (values that move together, a key given in some cells only), several commands that each
are, so every command runs exactly the cells it lists. The sweep's command as typed follows as a
comment where it differs (e.g. `+experiment=paper_kernels`, whose lists are in its YAML). Rows
from before rows recorded their overrides get a line saying so.
"""

from __future__ import annotations

import itertools
import math
import shlex

import pandas as pd

RUN = ["python", "-m", "lcab.run"]
NOT_RECORDED = "# command not recorded: {n} row(s) predate rows that record their Hydra overrides"

Cell = dict[str, "str | None"]  # override key (`+experiment`, `~cp`) -> value; None: no `=value`


def _cell(overrides: list[str]) -> Cell:
    out: Cell = {}
    for o in overrides:
        key, eq, value = o.partition("=")
        out[key] = value if eq else None  # a key given twice: the last one holds, as in Hydra
    return out


def _token(key: str, values: list[str | None]) -> str:
    return key if values == [None] else f"{key}={','.join(str(v) for v in values)}"


def _commands_for(cells: list[Cell]) -> list[list[str]]:
    """The fewest commands whose overrides (one Cartesian product each) cover exactly these cells."""
    keys = list(dict.fromkeys(k for c in cells for k in c))
    for k in keys:
        has = [c for c in cells if k in c]
        if 0 < len(has) < len(cells):  # a key given in some cells only: split on it
            return _commands_for(has) + _commands_for([c for c in cells if k not in c])
    unique = {tuple(sorted(c.items(), key=lambda kv: kv[0])) for c in cells}
    values = {k: list(dict.fromkeys(c[k] for c in cells)) for k in keys}  # in the order they ran
    varying = [k for k in keys if len(values[k]) > 1]
    product = math.prod(len(values[k]) for k in varying) == len(unique)
    if not product or any(None in values[k] for k in varying):
        # Values that move together: split on the key that gives the fewest commands.
        options = [
            list(
                itertools.chain.from_iterable(
                    _commands_for([c for c in cells if c[k] == v]) for v in values[k]
                )
            )
            for k in varying
        ]
        return min(options, key=len)
    return [["-m"] * bool(varying) + [_token(k, values[k]) for k in keys]]


def _recorded(v: object) -> list[str] | None:
    return v if isinstance(v, list) and v and all(isinstance(o, str) for o in v) else None


def commands(grp: pd.DataFrame) -> list[str]:
    """The command lines of one sweep's rows (every row, not only the newest per cell)."""
    given = [c for c in dict.fromkeys(grp.get("command", [])) if c]  # a foreign row's own command
    if given:
        return given
    jobs = [o for o in map(_recorded, grp.get("overrides", [])) if o is not None]
    built = _commands_for([_cell(o) for o in jobs]) if jobs else []
    out = [shlex.join(RUN + args) for args in built]
    typed = list(dict.fromkeys(tuple(o) for o in map(_recorded, grp.get("sweep_overrides", [])) if o))
    if len(typed) == 1 and built not in ([list(typed[0])], [["-m", *typed[0]]]):
        out.append("# as typed: " + shlex.join([*RUN, "-m", *typed[0]]))
    if len(jobs) < len(grp):
        out.append(NOT_RECORDED.format(n=len(grp) - len(jobs)))
    return out


def sweep_commands(df: pd.DataFrame) -> list[dict]:
    """One entry per sweep: where it ran, its row count, and its command lines."""
    out = []
    key = df["sweep"].where(df["sweep"] != "", df["source"])
    for sweep, grp in df.groupby(key, sort=False):
        out.append(
            {
                "sweep": sweep,
                "rows": len(grp),
                "source": ", ".join(dict.fromkeys(grp["source"])),
                "commands": commands(grp),
            }
        )
    return out
