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


def cell_line(label: str, r: Result) -> str:
    m = r.metrics
    if r.status == "ok" or "tflops" in m:
        mfu = f" MFU={m['mfu']:.1%}" if m.get("mfu") else ""
        err = ""
        if "verify_passed" in m:
            err = " verify=" + ("pass" if m["verify_passed"] else "FAIL")
        core = f"p50={m['time_ms_p50']:.3f}ms [p20 {m['time_ms_p20']:.3f}, p80 {m['time_ms_p80']:.3f}] "
        core += f"{flops_rate(m.get('tflops'))}{mfu}{err}"
    else:
        core = ""
    reason = f" {r.reason}" if r.reason else ""
    return f"[{_MARK.get(r.status, r.status):>3}] {label}  {core}{reason}".rstrip()
