"""s2unet.runtime: glibc keeps freed memory, so repeated forward passes need no new pages."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A few forward passes of a convolution whose 48 MiB output glibc would map afresh each time;
# print the page faults of the last one.
_CHILD = """
import resource, sys, torch
from s2unet.runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] != "default" else False
if sys.argv[1] == "restored":
    applied = keep_freed_memory(False)
x, conv = torch.rand(4, 16, 256, 256), torch.nn.Conv2d(16, 48, 3, padding=1)
def step():
    with torch.no_grad():
        torch.nn.functional.gelu(conv(x)).sum().item()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_keep_freed_memory_reuses_large_blocks_and_can_be_undone() -> None:
    applied, reused = _faults("reuse")
    _, fresh = _faults("default")
    restored_applied, restored = _faults("restored")
    # 48 MiB is 12288 pages of 4 KiB, twice (convolution and GELU outputs): glibc's default
    # maps and faults them in again on every pass.
    assert applied == restored_applied == "True"
    assert fresh > 10_000 and reused < 1_000 and restored > 10_000
