"""Process-wide settings for s2unet's jobs, applied by the command-line entry points only
(importing ``s2unet`` changes nothing): idle OpenMP threads sleep, and freed memory is kept for
reuse (Linux, glibc).

Idle OpenMP threads spin by default; on a shared CPU that spinning cost 1.3-4x in training step
time (bench/results/investigation.md, item 1). :func:`prefer_passive_openmp` asks for sleeping
threads, which OpenMP reads once, when torch loads it, so it must run before torch is imported.

torch's CPU tensors come from the C library's ``malloc``. glibc serves every allocation above
its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it on free, so each large
activation of every forward pass is page-faulted and zeroed by the kernel again. For Hiera-T
at 352 px with batches of 8 that was 0.24 million page faults and 15 % of the CPU time of one
forward pass, spent in the kernel (`python bench/reference_check.py malloc`;
bench/results/investigation.md, item 9). Telling glibc to
take large blocks from its heap and not to hand freed memory back lets later steps reuse it;
the process then keeps its peak resident memory until it exits, which suits a training or
inference job.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
from contextlib import contextmanager
from typing import Iterator

# mallopt parameter numbers and glibc's defaults from <malloc.h> / malloc.c.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}
_KEEP = {_M_TRIM_THRESHOLD: 2**31 - 1, _M_MMAP_MAX: 0}  # mallopt takes an int: 2**31 - 1 is its largest


def prefer_passive_openmp() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already chose a policy.

    Returns:
        True when the policy in force is the one torch will run with: torch was not imported
        yet. False once torch is loaded (its OpenMP runtime has read the variable already), in
        which case nothing is changed.
    """
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


def keep_freed_memory(keep: bool = True) -> bool:
    """Make glibc reuse freed memory for later allocations instead of returning it to the OS.

    Affects allocations made after the call, in this process and in processes it forks.

    Args:
        keep: False restores glibc's default thresholds (fixed at their initial values:
            glibc's own sliding mmap threshold stays off), so ``bench/speed.py`` can compare
            both within one process.

    Returns:
        True when applied; False where the C library is not glibc (macOS, Windows, musl),
        which is left as it is.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    # mallopt returns 1 on success.
    return all(libc.mallopt(param, value) == 1 for param, value in (_KEEP if keep else _DEFAULTS).items())


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run torch with ``threads`` intra-op threads for a while (None or 0: leave it as it is),
    then restore the previous count, so a library call or one training run does not change
    the setting of the process that called it.
    """
    import torch  # here, not at the top: prefer_passive_openmp must be able to run before torch loads

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
