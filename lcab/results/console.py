"""One readable console line per cell."""

from __future__ import annotations

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


def cell_line(label: str, r: Result) -> str:
    m = r.metrics
    if r.status == "ok" or "tflops" in m:
        mfu = f" MFU={m['mfu']:.1%}" if m.get("mfu") else ""
        err = ""
        if "verify_passed" in m:
            err = " verify=" + ("pass" if m["verify_passed"] else "FAIL")
        core = f"p50={m['time_ms_p50']:.3f}ms [p20 {m['time_ms_p20']:.3f}, p80 {m['time_ms_p80']:.3f}] "
        core += f"{m['tflops']:.2f} TFLOPs/s{mfu}{err}"
    else:
        core = ""
    reason = f" {r.reason}" if r.reason else ""
    return f"[{_MARK.get(r.status, r.status):>3}] {label}  {core}{reason}".rstrip()
