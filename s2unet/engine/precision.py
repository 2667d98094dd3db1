"""Mixed precision for training, only where it measures faster than fp32 on the machine and
for the model that trains.

On CUDA ``auto`` picks bf16 where supported, else fp16 with loss scaling. On a CPU, CPU flags
do not tell: without native bf16 (AVX2-only) bf16 is emulated and a Hiera-T forward ran 12x
slower than fp32, but a Xeon *with* AVX512-BF16 (no AMX) also trained at 3.1 img/s under bf16
against 5.7 img/s in fp32, although a large bf16 matmul ran twice as fast there. On CPU,
attention backward runs several times slower in bf16 (6.4x in a TinyViT training profile on a
Xeon with AMX) while matrix products, norms and activations speed up, so the outcome depends
on the model: on that Xeon Hiera-T trained 1.21x faster in bf16 and MobileSAM TinyViT 0.73x.
``auto`` therefore times a training step of the model itself (a copy, forward and backward, in
fp32 and under bf16 autocast, in turns) and takes bf16 only when it is clearly faster. Models
that need more than the image to run (prompted, text-prompted) are represented by a small block
with the models' mix of operations. The result is cached per machine and model configuration
(:func:`s2unet.predict.precision.cached_measurement`), so the measurement runs once.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..models import SegmentationModel
from ..predict.precision import (
    BF16_MIN_SPEEDUP,
    PrecisionChoice,
    cached_measurement,
    machine_key,
    model_key,
    time_fp32_and_bf16,
)

CPU = torch.device("cpu")


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


@dataclass(frozen=True)
class TrainingProbe:
    """The model whose training step ``train.amp: auto`` times.

    Attributes:
        model: the model as it trains (a deep copy is timed, so its weights, batch-norm
            statistics and gradients stay untouched).
        image_size: the square input size.
        key: the model part of the cache key (:func:`s2unet.predict.precision.model_key`).
    """

    model: nn.Module
    image_size: int
    key: str

    def step(self) -> Callable[[], None]:
        """One forward through every head and backward, on a fixed input, of a copy of the model."""
        net = copy.deepcopy(self.model).train()
        with torch.random.fork_rng(devices=[]):  # must not shift the run's seeded random stream
            torch.manual_seed(0)
            x = torch.rand(1, 3, self.image_size, self.image_size)

        def run() -> None:
            sum(o.float().mean() for o in net(x)).backward()
            net.zero_grad(set_to_none=True)

        return run


def training_probe(model: SegmentationModel, cfg: Config) -> TrainingProbe | None:
    """The probe of ``model`` as ``cfg`` trains it, or None when it needs more than an image to
    run (prompted models draw prompts from the target, text-prompted ones need phrases)."""
    if model.trains_with_target or cfg.text.enabled:
        return None
    m = cfg.model
    key = (f"{model_key(m.arch, m.encoder, cfg.data.image_size, 1)} adapter {m.adapter.placement}"
           f"{' attention-lora' if m.attention_lora.enabled else ''}{' encoder-trains' if m.train_encoder else ''}")
    return TrainingProbe(model, cfg.data.image_size, key)


def _block_step() -> Callable[[], None]:
    with torch.random.fork_rng(devices=[]):  # must not shift the run's seeded random stream
        torch.manual_seed(0)
        block = _ProbeBlock()
        x = torch.randn(1, 64, 28, 28)
        target = torch.rand(1, 1, 56, 56)

    def run() -> None:
        F.binary_cross_entropy_with_logits(block(x), target).backward()
        block.zero_grad(set_to_none=True)

    return run


def measure_cpu_bf16_speedup(probe: TrainingProbe | None = None, rounds: int = 5,
                             budget_s: float = 1.0) -> dict[str, float]:
    """Time a training step in fp32 and under bf16 autocast, in turns
    (:func:`s2unet.predict.precision.time_fp32_and_bf16`).

    Args:
        probe: the model to time; None times the small block (:class:`_ProbeBlock`).
        rounds: timed rounds at most (after one warm-up round).
        budget_s: stop adding rounds (keeping at least two) once this much time was spent.

    Returns:
        ``speedup`` (fp32 time / bf16 time; > 1 means bf16 is faster), ``fp32_s`` and
        ``bf16_s`` (median step times), ``rounds`` (timed rounds taken).
    """
    step = _block_step() if probe is None else probe.step()
    return time_fp32_and_bf16(step, CPU, rounds, budget_s)[0]


def cpu_bf16_speedup(probe: TrainingProbe | None = None) -> tuple[dict[str, float], bool]:
    """The bf16 training speed-up on this machine for ``probe``'s model (None: the block),
    measured once and then read from the cache.

    Returns:
        The :func:`measure_cpu_bf16_speedup` result and whether it came from the cache.
    """
    key = f"{machine_key()} | train {'probe block' if probe is None else probe.key}"
    return cached_measurement(key, lambda: measure_cpu_bf16_speedup(probe))


def resolve_amp(mode: str, device: torch.device, probe: TrainingProbe | None = None) -> PrecisionChoice:
    """The autocast dtype for a config's ``train.amp`` on ``device``, and why.

    Args:
        mode: ``auto``, ``off``, ``bf16`` or ``fp16``.
        device: the training device.
        probe: the model that trains, measured and cached per model configuration; None
            measures the small block (models that need more than an image to run).

    Returns:
        The choice; on CPU ``auto`` and ``bf16`` consult the cached bf16 measurement, and an
        explicit ``bf16`` that measured slower is honoured with a warning.
    """
    if mode == "off":
        return PrecisionChoice(None, "precision fp32 (train.amp=off)")
    if device.type == "cuda":
        if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
            return PrecisionChoice(torch.float16, f"precision fp16 autocast with loss scaling (train.amp={mode}, CUDA)")
        return PrecisionChoice(torch.bfloat16, f"precision bf16 autocast (train.amp={mode}, CUDA)")
    if device.type != "cpu":
        return PrecisionChoice(None, f"precision fp32 (train.amp={mode}: no mixed precision on {device.type})")
    if mode == "fp16":
        warnings.warn("train.amp=fp16 is not supported on CPU; training in fp32")
        return PrecisionChoice(None, "precision fp32 (train.amp=fp16 is not supported on CPU)")
    try:
        measured, cached = cpu_bf16_speedup(probe)
    except RuntimeError as e:  # a torch build whose CPU autocast cannot run the probe's ops
        if mode == "bf16":
            raise
        return PrecisionChoice(None, f"precision fp32 (train.amp=auto: bf16 autocast failed on this CPU: {e})")
    threads = torch.get_num_threads()
    what = "the probe block" if probe is None else probe.key
    speed = (f"bf16 {measured['speedup']:.2f}x the speed of fp32 in a {'cached' if cached else 'fresh'} "
             f"measurement of {what} on this CPU with {threads} thread{'s' if threads != 1 else ''}")
    faster = measured["speedup"] >= BF16_MIN_SPEEDUP
    if mode == "bf16":
        if not faster:
            warnings.warn(f"train.amp=bf16 is honoured, but {speed}: this run would train faster with "
                          f"train.amp=auto or off", stacklevel=2)
        return PrecisionChoice(torch.bfloat16, f"precision bf16 autocast (train.amp=bf16; {speed})")
    if faster:
        return PrecisionChoice(torch.bfloat16, f"precision bf16 autocast (train.amp=auto: {speed}, "
                                                 f">= {BF16_MIN_SPEEDUP}x needed)")
    return PrecisionChoice(None, f"precision fp32 (train.amp=auto: {speed}, bf16 needs >= {BF16_MIN_SPEEDUP}x)")
