"""Shared fixtures: where ../shared lives, and a deterministic torch setup for every test."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from s2unet.runtime import prefer_passive_openmp

prefer_passive_openmp()  # as the command-line entry points do, before torch loads
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """The real data and weights: $S2UNET_SHARED, else ../shared beside the checkout."""
    return Path(os.environ.get("S2UNET_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    if not (root / "README.md").is_file():
        pytest.skip(f"shared data not found at {root}; set S2UNET_SHARED to the folder holding data/ and weights/")
    return root


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def disk_full_at(monkeypatch: pytest.MonkeyPatch):
    """``arm(name)``: the atomic rename onto any file called ``name`` fails with ENOSPC.

    Simulates a disk that fills up at that file (the tests may run as root, where a read-only
    folder cannot be made with chmod). The error names the temporary file, as the OS would.
    """
    real = os.replace

    def arm(name: str, code: int = errno.ENOSPC) -> None:
        def replace(src, dst, *args, **kwargs):
            if Path(dst).name == name:
                raise OSError(code, os.strerror(code), str(src))
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)

    return arm


@pytest.fixture(autouse=True, scope="session")
def _private_amp_cache(tmp_path_factory) -> None:
    """train.amp=auto caches its bf16 measurement under the user's cache dir: keep the tests'
    measurement out of the real one (subprocesses inherit the variable)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


@pytest.fixture(autouse=True)
def _inference_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inference's ``auto`` precision measures bf16 on the machine that runs: on a CPU with fast
    bf16 the tests' predictions would differ from machine to machine. Here the measurement says
    bf16 is slower, so every test predicts in fp32 (tests/test_precision.py imports the real
    measurement before this replaces it, and puts it back where it tests it)."""
    from s2unet.predict import precision

    def slower_bf16(*args, **kwargs) -> dict[str, float]:
        return {"speedup": 0.5, "fp32_s": 0.1, "bf16_s": 0.2, "rounds": 1, "dice": 1.0}

    monkeypatch.setattr(precision, "measure_inference", slower_bf16)
