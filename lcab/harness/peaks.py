"""Datasheet dense peaks (TFLOPs/s) per device and dtype, for MFU and the above-peak check.

Matched by substring of torch.cuda.get_device_name(); the first match wins, so the more
specific names come first. fp32 is the non-tensor-core rate (lcab leaves TF32 off).
"""

from __future__ import annotations

PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0, "fp64": 26.0}),
    ("H100", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0, "fp64": 34.0}),
    ("H200", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0, "fp64": 34.0}),
    ("H20", {"bf16": 148.0, "fp16": 148.0, "fp32": 44.0, "fp64": 1.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5, "fp64": 9.7}),
    ("B200", {"bf16": 2250.0, "fp16": 2250.0, "fp32": 80.0, "fp64": 40.0}),
    ("L40S", {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6, "fp64": 1.4}),
)


def peak_tflops(device_name: str, dtype: str) -> float | None:
    for key, table in PEAKS:
        if key in device_name:
            return table.get(dtype)
    return None
