"""Reduced precision only where it measures faster on this machine and for this model.

CPU flags do not tell whether bf16 pays: on an AMD EPYC with AVX2 bf16 is emulated and a
Hiera-T forward ran 12x slower than fp32; on a Xeon with AMX an s2unet Hiera-T forward ran
0.37x the fp32 time and MobileSAM 0.44x, while a TinyViT *training* step ran slower in bf16
(attention backward). So the choice is measured, per machine and per model configuration, and
cached: the first run pays a few seconds, later runs read the answer.

This module holds what inference and training share: the timing of one step in fp32 and under
bf16 autocast taken in turns (:func:`time_fp32_and_bf16`), the cache keyed by machine and
model (:func:`cached_measurement`, ``$XDG_CACHE_HOME/s2unet/amp.json``), the choice object, and
the inference rule (:func:`choose_inference_precision`): bf16 only when at least
:data:`BF16_MIN_SPEEDUP` faster *and* its masks agree with fp32's (Dice >=
:data:`MIN_MASK_DICE`) on a fixed probe input. The training rule is ``s2unet.engine.precision``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping

import numpy as np
import torch

from ..io import write_json
from ..models import get_architecture

# bf16 must beat fp32 by this factor: the probe is small and the machine may be shared, so
# near-ties stay in fp32, the precision that cannot lose accuracy.
BF16_MIN_SPEEDUP = 1.15
# Masks of the fixed probe input in bf16 against fp32: below this Dice bf16 is refused.
MIN_MASK_DICE = 0.995
PRECISIONS = ("auto", "fp32", "bf16")
CACHE_VERSION = 1


@dataclass(frozen=True)
class PrecisionChoice:
    """What a precision setting resolved to on a device.

    Attributes:
        dtype: the autocast dtype, or None for full fp32.
        reason: one line saying what was chosen and why (printed at the start of a run).
        measured: the measurement behind an ``auto`` choice (times, speed-up, mask Dice), if any.
    """

    dtype: torch.dtype | None
    reason: str
    measured: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``: what the model computes in."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    def to_payload(self) -> dict[str, Any]:
        """``{"precision", "reason", "measured"}`` for ``summary.json``."""
        return {"precision": self.name, "reason": self.reason,
                "measured": None if self.measured is None else dict(self.measured)}


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context for fp32 (None)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fp32_and_bf16(step: Callable[[], Any], device: torch.device, rounds: int = 5,
                       budget_s: float = 1.0) -> tuple[dict[str, float], dict[str, Any]]:
    """Time ``step`` in fp32 and under bf16 autocast, taking turns (fp32, bf16, fp32, ...) so
    background load hits both alike; the speed-up is the median of the per-round ratios.

    Emulated bf16 is often 10x slower: once the warm-up shows bf16 4x behind, no timed rounds
    are taken (the warm-up times decide).

    Args:
        step: runs the workload once (autocast is entered around it) and returns its output.
        device: where it runs (CUDA is synchronised around each step).
        rounds: timed rounds at most, after one warm-up round.
        budget_s: stop adding rounds (keeping at least two) once this much time was spent.

    Returns:
        ``({"speedup" (fp32 time / bf16 time, > 1 = bf16 faster), "fp32_s", "bf16_s"
        (medians), "rounds"}, {"fp32": output, "bf16": output})`` with the warm-up outputs.
    """
    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    outputs: dict[str, Any] = {}

    def timed(name: str) -> float:
        _synchronize(device)
        t0 = time.perf_counter()
        with autocast(device, dtypes[name]):
            outputs.setdefault(name, step())
        _synchronize(device)
        return time.perf_counter() - t0

    started = time.perf_counter()
    warm = {name: timed(name) for name in dtypes}
    times: dict[str, list[float]] = {name: [] for name in dtypes}
    if warm["bf16"] < 4 * warm["fp32"]:
        for i in range(rounds):
            if i >= 2 and time.perf_counter() - started > budget_s:
                break
            for name in dtypes:
                times[name].append(timed(name))
    if not times["fp32"]:
        times = {name: [t] for name, t in warm.items()}
    ratios = [f / b for f, b in zip(times["fp32"], times["bf16"])]
    return ({"speedup": statistics.median(ratios), "fp32_s": statistics.median(times["fp32"]),
             "bf16_s": statistics.median(times["bf16"]), "rounds": len(ratios)}, outputs)


def amp_cache_path() -> Path:
    """Where per-machine measurements are kept (``$XDG_CACHE_HOME/s2unet/amp.json``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "s2unet" / "amp.json"


def machine_key() -> str:
    """Identity of what a measurement depends on besides the model: CPU model and flags, torch
    build and the CPU kernels it dispatches to (``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA``
    change them), and the intra-op thread count."""
    fields: dict[str, str] = {}
    try:
        first_cpu = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first_cpu.splitlines())}
    except OSError:  # not Linux: the processor string and torch's capability still separate machines
        pass
    model, flags = fields.get("model name") or platform.processor(), fields.get("flags", "")
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    parts = [model, f"flags {hashlib.sha256(flags.encode()).hexdigest()[:12]}", f"torch {torch.__version__}",
             torch.backends.cpu.get_cpu_capability(), *([f"oneDNN {isa}"] if isa else []),
             f"{torch.get_num_threads()} threads"]
    return " | ".join(parts)


def _read_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing or corrupt: measure again and rewrite it
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("machines"), dict):
        return {}
    return data["machines"]


def cached_measurement(key: str, measure: Callable[[], dict[str, float]],
                       required: tuple[str, ...] = ("speedup",)) -> tuple[dict[str, float], bool]:
    """A measurement stored under ``key`` in :func:`amp_cache_path`, taken once.

    Args:
        key: what the measurement depends on (:func:`machine_key` plus the workload).
        measure: takes the measurement when the cache has no valid entry.
        required: numeric fields a cached entry must have to be used (else measured again).

    Returns:
        The measurement and whether it came from the cache.
    """
    path = amp_cache_path()
    machines = _read_cache(path)
    entry = machines.get(key)
    if isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in required):
        return entry, True
    entry = measure()
    machines[key] = entry
    try:
        write_json(path, {"version": CACHE_VERSION, "machines": machines}, indent=1)
    except OSError as e:  # a read-only home only costs a re-measurement next run
        warnings.warn(f"could not cache the bf16 measurement in {path}: {e}")
    return entry, False


def model_key(arch: str, encoder: str, image_size: int, batch: int) -> str:
    """The model part of a cache key: what changes the fp32 / bf16 balance of a forward."""
    return f"{arch} {'-' if get_architecture(arch).encoders == 'none' else encoder} {image_size}px batch {batch}"


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean mask arrays (1.0 when both are empty: they agree)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def decide_inference(measured: Mapping[str, float], cached: bool = False) -> PrecisionChoice:
    """The ``auto`` rule for inference: bf16 only when at least :data:`BF16_MIN_SPEEDUP` faster
    and its probe masks agree with fp32's at Dice >= :data:`MIN_MASK_DICE`.

    Args:
        measured: ``speedup`` (fp32 time / bf16 time) and ``dice`` (bf16 masks against fp32's),
            as :func:`choose_inference_precision` measures them.
        cached: the measurement came from the cache (said in the reason).
    """
    speedup, dice = float(measured["speedup"]), float(measured["dice"])
    threads = torch.get_num_threads()
    how = (f"bf16 {speedup:.2f}x the speed of fp32, masks Dice {dice:.4f} against fp32, "
           f"{'cached' if cached else 'fresh'} measurement with {threads} thread{'s' if threads != 1 else ''}")
    if speedup < BF16_MIN_SPEEDUP:
        return PrecisionChoice(None, f"inference precision fp32 (auto: {how}; bf16 needs >= {BF16_MIN_SPEEDUP}x)",
                               measured)
    if dice < MIN_MASK_DICE:
        return PrecisionChoice(None, f"inference precision fp32 (auto: {how}; bf16 needs mask Dice >= "
                                     f"{MIN_MASK_DICE})", measured)
    return PrecisionChoice(torch.bfloat16, f"inference precision bf16 autocast (auto: {how})", measured)


def choose_inference_precision(mode: str, device: torch.device, key: str,
                               masks: Callable[[torch.Tensor], np.ndarray], image_size: int,
                               batch: int) -> PrecisionChoice:
    """Resolve ``--precision`` for inference.

    Args:
        mode: ``fp32`` or ``bf16`` (taken as given) or ``auto`` (:func:`measure_inference`,
            cached under :func:`machine_key` + ``key``, decided by :func:`decide_inference`).
        device: where the model runs.
        key: the model part of the cache key (:func:`model_key`).
        masks, image_size, batch: the model's forward to masks and its input, as
            :func:`measure_inference` takes them.

    """
    if mode == "fp32":
        return PrecisionChoice(None, "inference precision fp32 (--precision fp32)")
    if mode == "bf16":
        return PrecisionChoice(torch.bfloat16, "inference precision bf16 autocast (--precision bf16)")
    if device.type not in ("cpu", "cuda"):
        return PrecisionChoice(None, f"inference precision fp32 (auto: no bf16 autocast measured on {device.type})")
    try:
        measured, cached = cached_measurement(f"{machine_key()} | {device.type} inference {key}",
                                              lambda: measure_inference(masks, image_size, batch, device),
                                              required=("speedup", "dice"))
    except RuntimeError as e:  # a torch build whose autocast cannot run the model's ops
        return PrecisionChoice(None, f"inference precision fp32 (auto: bf16 autocast failed: {e})")
    return decide_inference(measured, cached)


def probe_input(batch: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """The fixed probe input: (batch, 3, S, S) smooth random structures in 0..1 (blurred noise
    upsampled from 1/16 of the size), the same on every machine for a seed."""
    side = max(image_size // 16, 2)
    coarse = torch.from_numpy(np.random.default_rng(seed).random((batch, 3, side, side), dtype=np.float32))
    return torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bicubic",
                                           align_corners=False).clamp_(0.0, 1.0)


@torch.inference_mode()
def measure_inference(masks: Callable[[torch.Tensor], np.ndarray], image_size: int, batch: int,
                      device: torch.device) -> dict[str, float]:
    """Time a batch of inference in fp32 and under bf16 autocast, and compare their masks.

    Args:
        masks: the model's forward from an input batch to boolean masks (what is thresholded
            and written), run inside the precision under test.
        image_size: the model's square input size.
        batch: slices per forward, as the run will use.
        device: where the model runs.

    Returns:
        :func:`time_fp32_and_bf16`'s timings plus ``dice``: the bf16 masks of
        :func:`probe_input` against the fp32 ones; of its first image only when bf16 was 4x
        slower on it (the whole batch then is not worth timing).
    """
    x = probe_input(batch, image_size).to(device)
    # Emulated bf16 (AVX2) is ~10x slower: one image shows it at an eighth of a batch's cost.
    timings, outputs = time_fp32_and_bf16(lambda: masks(x[:1]), device, rounds=0)
    if batch > 1 and timings["speedup"] > 0.25:
        timings, outputs = time_fp32_and_bf16(lambda: masks(x), device)
    return {**timings, "dice": mask_dice(outputs["fp32"], outputs["bf16"])}
