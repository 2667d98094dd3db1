"""Process-wide memory setting for s2unet's jobs: keep freed memory for reuse (Linux, glibc).

torch's CPU tensors come from the C library's ``malloc``. glibc serves every allocation above
its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it on free, so each large
activation of every forward pass is page-faulted and zeroed by the kernel again. For Hiera-T
at 352 px with batches of 8 that was 0.2 million page faults and 14 % of the CPU time of one
forward pass, spent in the kernel (bench/results/investigation.md, item 9). Telling glibc to
take large blocks from its heap and not to hand freed memory back lets later steps reuse it;
the process then keeps its peak resident memory until it exits, which suits a training or
inference job.
"""
from __future__ import annotations

import ctypes
import platform

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: the largest value it accepts


def keep_freed_memory() -> bool:
    """Make glibc reuse freed memory for later allocations instead of returning it to the OS.

    Affects allocations made after the call, in this process and in processes it forks.

    Returns:
        True when applied; False where the C library is not glibc (macOS, Windows, musl),
        which is left as it is.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    # mallopt returns 1 on success.
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
