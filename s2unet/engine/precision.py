"""Mixed precision only where the hardware runs it natively.

On CPUs without native bf16 (AVX2-only, like this project's CI machines) bf16 is emulated:
a bf16 matmul measured 0.3 GFLOP/s against 153 GFLOP/s in fp32, and a Hiera-T forward under
bf16 autocast was 7x slower. ``auto`` therefore enables bf16 on CPU only when the CPU reports
AMX or AVX512-BF16, and on CUDA picks bf16 where supported, else fp16 with loss scaling.
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import ContextManager

import torch


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a config's ``train.amp`` on ``device`` (None = full fp32)."""
    if mode == "off":
        return None
    if device.type == "cuda":
        if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16
    if mode == "fp16":
        warnings.warn("train.amp=fp16 is not supported on CPU; training in fp32")
        return None
    if mode == "bf16" and not cpu_has_native_bf16():
        warnings.warn("train.amp=bf16 on a CPU without native bf16 is emulated and much slower than fp32")
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
