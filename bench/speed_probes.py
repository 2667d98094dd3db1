"""Probes of the speed benchmark: timing statistics, resident-memory high-water marks, the dense
matmul rate (the machine speed the floors use) and the FLOP counter."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch


# ------------------------------------------------------------------------------ measuring helpers
def median(values: Sequence[float]) -> Optional[float]:
    """Median, or None for no values."""
    return statistics.median(values) if values else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a / b, or None when either is missing or b is zero."""
    return a / b if a is not None and b else None


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_rss() -> bool:
    """Reset this process's resident-memory high-water mark (Linux ``clear_refs`` 5).

    Freed heap is handed back to the kernel first (glibc ``malloc_trim``), so that memory the
    previous phase freed but the allocator kept does not count towards the next phase's peak.

    Returns:
        False where the kernel does not allow it; peaks then cover the whole process.
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the peak may include retained heap
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> Optional[int]:
    """A memory field of ``/proc/self/status`` (``VmHWM``, ``VmRSS``) in bytes; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def process_peak_rss_bytes() -> int:
    """Peak resident memory over this process's whole life (``ru_maxrss``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def peak_rss_bytes() -> int:
    """Peak resident memory since the last reset (VmHWM), else since the process started."""
    peak = _status_bytes("VmHWM")
    return process_peak_rss_bytes() if peak is None else peak


def current_rss_bytes() -> Optional[int]:
    """Resident memory now (VmRSS)."""
    return _status_bytes("VmRSS")


def matmul_rate(n: int = 2048, repeats: int = 7, dtype: torch.dtype = torch.float32, device: str = "cpu") -> dict[str, float]:
    """Dense square matmul throughput.

    Args:
        n: matrix side.
        repeats: timed products (after one warm-up); the median time is used.
        dtype: element type.
        device: where to run.

    Returns:
        ``gflops`` (2 n^3 / median time / 1e9), ``best_gflops`` (from the fastest product) and
        ``median_s``.
    """
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=gen).to(dev, dtype)
    b = torch.rand(n, n, generator=gen).to(dev, dtype)
    out = torch.empty(n, n, device=dev, dtype=dtype)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        sync(dev)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(dev)
        times.append(time.perf_counter() - t0)
    flop = 2.0 * n**3
    return {"n": n, "gflops": flop / statistics.median(times) / 1e9, "best_gflops": flop / min(times) / 1e9,
            "median_s": statistics.median(times)}


def matmul_rate_child(device: str, threads: int) -> dict[str, float]:
    """:func:`matmul_rate` with the measuring processes' thread setting."""
    if threads:
        torch.set_num_threads(threads)
    return {**matmul_rate(device=device), "threads": torch.get_num_threads()}


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU flash-attention kernel (torch's counter only knows the GPU ones)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def flop_counter() -> "torch.utils.flop_counter.FlopCounterMode":
    """A FlopCounterMode that also counts CPU scaled-dot-product attention.

    Only matrix products, convolutions and attention are counted (the ops that dominate and
    that the matmul rate is a fair floor for); element-wise work is not.
    """
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_cpu_backward_flops
    return FlopCounterMode(display=False, custom_mapping=mapping)


class MatmulProbe:
    """One 2048^2 fp32 product timed between measurement rounds.

    Its rate, taken under the same background load as the steps around it, gives a
    load-normalised floor: on a busy shared machine both the steps and the probe slow down.
    """

    def __init__(self, device: torch.device, n: int = 2048) -> None:
        self.device, self.n = device, n
        self.threads = torch.get_num_threads()  # the process setting, not a runner's bench.threads
        self.a = torch.rand(n, n, device=device)
        self.b = torch.rand(n, n, device=device)
        self.out = torch.empty(n, n, device=device)
        self.times: list[float] = []
        torch.mm(self.a, self.b, out=self.out)  # warm-up

    def sample(self) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        sync(self.device)
        t0 = time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        sync(self.device)
        self.times.append(time.perf_counter() - t0)

    def gflops(self, times: Optional[Sequence[float]] = None) -> Optional[float]:
        """Median rate of ``times`` (default: all samples so far)."""
        t = median(self.times if times is None else times)
        return 2.0 * self.n**3 / t / 1e9 if t else None


def paired_ratio(times: Sequence[float], ref: Sequence[float]) -> Optional[float]:
    """Median over rounds of time / reference time (rounds ran back to back)."""
    pairs = [a / b for a, b in zip(times, ref) if b]
    return median(pairs)
