"""Flags of a CP efficiency table against its targets (every strategy, and the best one per mask)."""

from __future__ import annotations

import pandas as pd


def flag_targets(
    frame: pd.DataFrame, col: str, group: list[str], every: dict[str, float], best: dict[str, float]
) -> pd.DataFrame:
    """Mark rows whose `col` is below `every[mask]` ("below t"), and per `group` the best row of
    a mask in `best` ("best" = yes, and "best below t" when even that misses)."""
    for i, row in frame.iterrows():
        t, v = every.get(row["mask"]), row[col]
        if t is not None and v is not None and not pd.isna(v) and v < t:
            frame.at[i, "flag"] = f"below {t:g}"
    has = frame[frame["mask"].isin(list(best)) & frame[col].notna()]
    for _, g in has.groupby(group, sort=False):
        i = g[col].astype(float).idxmax()
        frame.at[i, "best"] = "yes"
        t = best[frame.at[i, "mask"]]
        if frame.at[i, col] < t:
            frame.at[i, "flag"] = f"best below {t:g}"
    return frame
