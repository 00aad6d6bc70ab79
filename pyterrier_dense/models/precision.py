"""Device and numeric precision: which device to run on, and whether reduced precision is fast there.

``precision="auto"`` picks bf16 autocast on CPUs with native bf16 instructions (AVX512-BF16 or AMX), fp16 on CUDA
GPUs (bf16 where the GPU supports it), and exact fp32 everywhere else, so a CPU without native bf16 never gets
the slow emulated path by default.
"""
from __future__ import annotations

import contextlib
import logging

import torch

__all__ = ["resolve_device", "resolve_precision", "cpu_has_native_bf16", "autocast"]

log = logging.getLogger("pyterrier_dense")

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """True when this CPU executes bf16 matrix products natively (AVX512-BF16 or AMX-BF16)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if probe is not None:
            try:
                if probe():
                    return True
            except RuntimeError:  # probe unavailable on this build
                continue
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``"auto"`` into ``"bf16"``, ``"fp16"`` or ``"fp32"`` for ``device``; validate explicit choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("precision='bf16' on a CPU without native bf16: this is emulated and slower than fp32")
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("precision='fp16' is for CUDA devices; on CPU use 'bf16' or 'fp32'")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """A context that runs matrix products at ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
