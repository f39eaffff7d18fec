"""One readable console line per cell."""

from __future__ import annotations

import math

from lcab.results.schema import Result

_MARK = {
    "ok": "ok",
    "unsupported": "X",
    "unavailable": "-",
    "oom": "E",
    "error": "ERR",
    "invalid": "INV",
    "interrupted": "INT",
}


# Throughput units, largest first, as multiples of TFLOPs/s: a CPU cell runs at GFLOPs/s or less,
# where "0.00 TFLOPs/s" would say nothing.
_UNITS = (("TFLOPs/s", 1.0), ("GFLOPs/s", 1e-3), ("MFLOPs/s", 1e-6), ("kFLOPs/s", 1e-9), ("FLOPs/s", 1e-12))


def flops_rate(tflops: float | None) -> str:
    """TFLOPs/s as text with at least 3 significant digits: 612.35 TFLOPs/s, 1.07 GFLOPs/s, 85.3 MFLOPs/s."""
    if not isinstance(tflops, (int, float)) or not math.isfinite(tflops):
        return f"{'?' if tflops is None else tflops} TFLOPs/s"
    if tflops == 0:
        return "0 TFLOPs/s"
    rounded = float(f"{tflops:.3g}")  # 0.99996 is 1.00 TFLOPs/s, not 1000 GFLOPs/s
    for unit, scale in _UNITS:
        if abs(rounded) >= scale or unit == "FLOPs/s":
            if unit == "TFLOPs/s":
                return f"{tflops:.2f} {unit}"
            v = rounded / scale
            decimals = max(0, 2 - math.floor(math.log10(abs(v))))
            return f"{v:.{decimals}f} {unit}"
    raise AssertionError("unreachable")


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ms(v: object) -> str:
    """A time, or "?" where a row read back from a store lacks it."""
    return f"{v:.3f}" if _number(v) else "?"


def cell_line(label: str, r: Result) -> str:
    m = r.metrics
    if r.status == "ok" or "tflops" in m:
        mfu = f" MFU={m['mfu']:.1%}" if _number(m.get("mfu")) else ""
        err = ""
        if "verify_passed" in m:
            err = " verify=" + ("pass" if m["verify_passed"] else "FAIL")
        p20, p50, p80 = (_ms(m.get(f"time_ms_{q}")) for q in ("p20", "p50", "p80"))
        core = f"p50={p50}ms [p20 {p20}, p80 {p80}] {flops_rate(m.get('tflops'))}{mfu}{err}"
    else:
        core = ""
    reason = f" {r.reason}" if r.reason else ""
    return f"[{_MARK.get(r.status, r.status):>3}] {label}  {core}{reason}".rstrip()
