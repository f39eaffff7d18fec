"""What a CPU cell prints (issue 13, item 10): throughput with 3 significant digits in a unit that
fits (a CPU runs at GFLOPs/s, where "0.00 TFLOPs/s" says nothing), and no torch advice to
compile flex on every flex cell (lcab runs CPU flex uncompiled on purpose)."""

from __future__ import annotations

import re
import warnings

import pytest
from lcab_cli import lcab_run, rows

from lcab.results.console import flops_rate

SCALE = {"TFLOPs/s": 1.0, "GFLOPs/s": 1e-3, "MFLOPs/s": 1e-6, "kFLOPs/s": 1e-9, "FLOPs/s": 1e-12}
RATE = re.compile(r"(-?[0-9.]+) ([kMGT]?FLOPs/s)")


def _read_back(text: str) -> tuple[float, int]:
    """(TFLOPs/s, significant digits) of a printed rate."""
    m = RATE.fullmatch(text) or RATE.search(text)
    assert m, text
    digits = len(m.group(1).lstrip("-").replace(".", "").lstrip("0"))
    return float(m.group(1)) * SCALE[m.group(2)], digits


@pytest.mark.parametrize(
    "tflops", [612.345, 12.5, 1.0, 0.9994, 0.00107, 0.0036208, 8.53e-5, 1.2e-5, 4.56e-8, 5e-10]
)
def test_rate_keeps_three_significant_digits(tflops):
    text = flops_rate(tflops)
    value, digits = _read_back(text)
    assert digits >= 3, text
    assert value == pytest.approx(tflops, rel=5e-3), text
    assert text.split()[1] == "TFLOPs/s" or value < 1.0  # a smaller unit only below 1 TFLOPs/s


def test_a_cpu_flex_cell_prints_its_rate_and_no_compile_advice(tmp_path):
    store = tmp_path / "r.jsonl"
    p = lcab_run(
        tmp_path,
        "kernel=flex",
        "bench.mode=fwd",
        "seqlen=256",
        "bench.iters=2",
        "bench.warmup=0",
        f"store={store}",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "flex_attention called without torch.compile" not in p.stderr, p.stderr[-3000:]
    assert "torch.compile(flex_attention)" not in p.stderr + p.stdout
    (row,) = rows(store)
    assert row["status"] == "ok", row["reason"]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("[ ok] flex"))
    value, digits = _read_back(line.split("]", 2)[-1])
    assert digits >= 3 and value == pytest.approx(row["metrics"]["tflops"], rel=5e-3), line


def test_only_the_compile_advice_is_silenced():
    """The flex filter is about one message: another warning from torch's flex module, or the
    same words from elsewhere, still shows."""
    import torch.nn.attention.flex_attention as flex_module

    from lcab.kernels.adapters.flex import _quiet_uncompiled_warning

    flex_globals = vars(flex_module)

    def warn_from_flex(message: str) -> list[str]:
        """A warning raised by code in torch's flex module (its globals, its file)."""
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("default")
            _quiet_uncompiled_warning()  # what prepare() installs, on top of the defaults
            code = compile("warnings.warn(message, UserWarning)", flex_globals["__file__"], "exec")
            exec(code, {**flex_globals, "warnings": warnings, "message": message})
        return [str(w.message) for w in seen]

    assert warn_from_flex("flex_attention called without torch.compile() - this will use ...") == []
    assert warn_from_flex("some other flex warning") == ["some other flex warning"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        _quiet_uncompiled_warning()
        warnings.warn("flex_attention called without torch.compile() elsewhere", UserWarning, stacklevel=1)
    assert len(seen) == 1
