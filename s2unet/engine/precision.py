"""Mixed precision only where it measures faster than fp32 on the machine that runs.

On CUDA ``auto`` picks bf16 where supported, else fp16 with loss scaling. On a CPU, CPU flags
do not tell: without native bf16 (AVX2-only) bf16 is emulated and a Hiera-T forward ran 12x
slower than fp32, but a Xeon *with* AVX512-BF16 (no AMX) also trained at 3.1 img/s under bf16
against 5.7 img/s in fp32, although a large bf16 matmul ran twice as fast there. On CPU,
attention backward runs several times slower in bf16 (6.4x in a TinyViT training profile on a
Xeon with AMX) while matrix products, norms and activations speed up, so the outcome depends
on the mix. ``auto`` therefore times a small block with the models' mix of operations (forward
and backward, in fp32 and under bf16 autocast, interleaved) and takes bf16 only when it is
clearly faster. The result is cached per machine (CPU model and flags, torch version and CPU
capability, thread count), so the measurement runs once.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from ..io import write_json

# bf16 must beat fp32 by this factor before ``auto`` takes it: the probe is small and the
# machine may be shared, so near-ties stay in fp32, the precision that cannot lose accuracy.
BF16_MIN_SPEEDUP = 1.15
CACHE_VERSION = 1


@dataclass(frozen=True)
class AmpChoice:
    """What ``train.amp`` resolved to on a device.

    Attributes:
        dtype: the autocast dtype, or None for full fp32.
        reason: one line saying what was chosen and why (logged at run start).
    """

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``: what the run computes in."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")


class _ProbeBlock(nn.Module):
    """The operations of the encoders and the decoder at their sizes in a 256-352 px model:
    an inverted-residual convolution block (TinyViT's first stage), a windowed-attention block
    with 32-channel heads and a learned attention bias (TinyViT's later stages; Hiera's are the
    same without the bias), and a conv / batch-norm / upsampling decoder step.

    Attention weighs about as much here as in TinyViT on purpose: CPU attention forward and
    backward ran 2-5x slower in bf16 than in fp32 while the rest sped up, so a probe without it
    would pick bf16 for a model it slows down.
    """

    def __init__(self, dim: int = 64, heads: int = 2, window: int = 7) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.mbconv = nn.Sequential(
            nn.Conv2d(dim, 2 * dim, 1, bias=False), nn.BatchNorm2d(2 * dim), nn.GELU(),
            nn.Conv2d(2 * dim, 2 * dim, 3, padding=1, groups=2 * dim, bias=False), nn.BatchNorm2d(2 * dim), nn.GELU(),
            nn.Conv2d(2 * dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.register_buffer("bias", torch.randn(1, heads, window * window, window * window))
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        # As in s2unet: the encoder is frozen, gradients flow through it to a trainable
        # adapter at its input, and the decoder trains.
        self.requires_grad_(False)
        self.adapter = nn.Conv2d(dim, dim, 1)
        self.decode = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.BatchNorm2d(dim // 2),
                                    nn.ReLU(inplace=True), nn.Conv2d(dim // 2, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.adapter(image)
        x = x + self.mbconv(x)
        b, c, side, _ = x.shape
        w, nw, n = self.window, side // self.window, self.window * self.window
        windows = x.view(b, c, nw, w, nw, w).permute(0, 2, 4, 3, 5, 1).reshape(-1, n, c)
        q, k, v = self.qkv(self.norm1(windows)).view(-1, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias.to(q.dtype))
        windows = windows + self.proj(attn.transpose(1, 2).reshape(-1, n, c))
        windows = windows + self.mlp(self.norm2(windows))
        x = windows.view(b, nw, nw, w, w, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, side, side)
        return F.interpolate(self.decode(x), scale_factor=2.0, mode="bilinear", align_corners=False)


def measure_cpu_bf16_speedup(rounds: int = 5, budget_s: float = 1.0) -> dict[str, float]:
    """Time a training step of a small encoder+decoder block in fp32 and under bf16 autocast.

    The two take turns (fp32, bf16, fp32, ...) so background load hits both alike, and the
    speed-up is the median of the per-round ratios. Emulated bf16 is often 10x slower: once
    the first warm-up shows bf16 that far behind, no more rounds are needed to decide.

    Args:
        rounds: timed rounds at most (after one warm-up round).
        budget_s: stop adding rounds (keeping at least two) once this much time was spent.

    Returns:
        ``speedup`` (fp32 time / bf16 time; > 1 means bf16 is faster), ``fp32_s`` and
        ``bf16_s`` (median step times), ``rounds`` (timed rounds taken).
    """
    with torch.random.fork_rng(devices=[]):  # must not shift the run's seeded random stream
        torch.manual_seed(0)
        block = _ProbeBlock()
        x = torch.randn(1, 64, 28, 28)
        target = torch.rand(1, 1, 56, 56)
    contexts: dict[str, Callable[[], ContextManager]] = {
        "fp32": nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}

    def step(name: str) -> float:
        t0 = time.perf_counter()
        with contexts[name]():
            loss = F.binary_cross_entropy_with_logits(block(x), target)
        loss.backward()
        block.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    started = time.perf_counter()
    warm = {name: step(name) for name in contexts}
    times: dict[str, list[float]] = {name: [] for name in contexts}
    if warm["bf16"] < 4 * warm["fp32"]:
        for i in range(rounds):
            if i >= 2 and time.perf_counter() - started > budget_s:
                break
            for name in contexts:
                times[name].append(step(name))
    if not times["fp32"]:
        times = {name: [t] for name, t in warm.items()}
    ratios = [f / b for f, b in zip(times["fp32"], times["bf16"])]
    return {"speedup": statistics.median(ratios), "fp32_s": statistics.median(times["fp32"]),
            "bf16_s": statistics.median(times["bf16"]), "rounds": len(ratios)}


def amp_cache_path() -> Path:
    """Where per-machine measurements are kept (``$XDG_CACHE_HOME/s2unet/amp.json``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "s2unet" / "amp.json"


def machine_key() -> str:
    """Identity of what the measurement depends on: CPU model and flags, torch build and the
    CPU kernels it dispatches to (``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA`` change them),
    and the intra-op thread count."""
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


def _write_cache(path: Path, machines: dict[str, dict]) -> None:
    try:
        write_json(path, {"version": CACHE_VERSION, "machines": machines}, indent=1)
    except OSError as e:  # a read-only home only costs a re-measurement next run
        warnings.warn(f"could not cache the bf16 measurement in {path}: {e}")


def cpu_bf16_speedup() -> tuple[dict[str, float], bool]:
    """The bf16 speed-up on this machine, measured once and then read from the cache.

    Returns:
        The :func:`measure_cpu_bf16_speedup` result and whether it came from the cache.
    """
    path, key = amp_cache_path(), machine_key()
    machines = _read_cache(path)
    entry = machines.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("speedup"), (int, float)):
        return entry, True
    entry = measure_cpu_bf16_speedup()
    machines[key] = entry
    _write_cache(path, machines)
    return entry, False


def resolve_amp(mode: str, device: torch.device) -> AmpChoice:
    """The autocast dtype for a config's ``train.amp`` on ``device``, and why.

    Args:
        mode: ``auto``, ``off``, ``bf16`` or ``fp16``.
        device: the training device.

    Returns:
        The choice; on CPU ``auto`` and ``bf16`` consult the cached bf16 measurement, and an
        explicit ``bf16`` that measured slower is honoured with a warning.
    """
    if mode == "off":
        return AmpChoice(None, "precision fp32 (train.amp=off)")
    if device.type == "cuda":
        if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
            return AmpChoice(torch.float16, f"precision fp16 autocast with loss scaling (train.amp={mode}, CUDA)")
        return AmpChoice(torch.bfloat16, f"precision bf16 autocast (train.amp={mode}, CUDA)")
    if device.type != "cpu":
        return AmpChoice(None, f"precision fp32 (train.amp={mode}: no mixed precision on {device.type})")
    if mode == "fp16":
        warnings.warn("train.amp=fp16 is not supported on CPU; training in fp32")
        return AmpChoice(None, "precision fp32 (train.amp=fp16 is not supported on CPU)")
    try:
        measured, cached = cpu_bf16_speedup()
    except RuntimeError as e:  # a torch build whose CPU autocast cannot run the probe's ops
        if mode == "bf16":
            raise
        return AmpChoice(None, f"precision fp32 (train.amp=auto: bf16 autocast failed on this CPU: {e})")
    threads = torch.get_num_threads()
    speed = (f"bf16 {measured['speedup']:.2f}x the speed of fp32 in a {'cached' if cached else 'fresh'} "
             f"measurement on this CPU with {threads} thread{'s' if threads != 1 else ''}")
    faster = measured["speedup"] >= BF16_MIN_SPEEDUP
    if mode == "bf16":
        if not faster:
            warnings.warn(f"train.amp=bf16 is honoured, but {speed}: this run would train faster with "
                          f"train.amp=auto or off", stacklevel=2)
        return AmpChoice(torch.bfloat16, f"precision bf16 autocast (train.amp=bf16; {speed})")
    if faster:
        return AmpChoice(torch.bfloat16, f"precision bf16 autocast (train.amp=auto: {speed}, "
                                         f">= {BF16_MIN_SPEEDUP}x needed)")
    return AmpChoice(None, f"precision fp32 (train.amp=auto: {speed}, bf16 needs >= {BF16_MIN_SPEEDUP}x)")


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context for fp32 (None)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
