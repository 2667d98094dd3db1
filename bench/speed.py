#!/usr/bin/env python
"""Speed and memory benchmark of s2unet models on the machine it runs on.

One entry point, five modes (see ``bench/README.md`` for the columns)::

    python bench/speed.py                       # default grid (encoders x sizes + CNN reference)
    python bench/speed.py --full                # every encoder at every size
    python bench/speed.py --compare "model.adapter.placement=stage" "model.adapter.placement=block"
    python bench/speed.py --placements          # adapter placement trade-off, Hiera-T 352 px batch 8
    python bench/speed.py --volume              # end-to-end CT volume through run_inference
    python bench/speed.py --amp-check           # bf16 vs fp32 on this CPU, and train.amp=auto's choice

Everything a configuration needs is a list of overrides: ``key.sub=value`` items go to
``s2unet.config.load_config`` (so ``data.image_size`` is the image size and
``train.batch_size`` the training batch), and ``bench.*`` items set benchmark-only knobs
(``bench.infer_batch``, ``bench.threads``, ``bench.channels_last``, ``bench.compile``,
``bench.merge_lora``). Every mode measures with the same function, :func:`measure_cases`:
grid and placement rows each run it in a fresh process (so peak memory belongs to one
configuration), ``--compare`` runs it once with all its configurations interleaved (so
background load hits them alike and the ratio of medians is meaningful on a shared machine).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/speed.py`` from a checkout, not installed
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402  (after the path fix above)
import yaml  # noqa: E402

from s2unet.runtime import keep_freed_memory  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"
PHASES = ("train", "infer")
GRID_ENCODERS = ("sam2.1_hiera_tiny", "sam2.1_hiera_small", "litemedsam_tinyvit", "mobilesam_tinyvit")
GRID_SIZES = (256, 352, 512)
# The slowest combinations, left out of the default grid so that it finishes in < 10 minutes on
# a 2-core CPU; ``--full`` runs them. Values say why.
SLOW_COMBOS: dict[tuple[str, int], str] = {
    ("sam2.1_hiera_small", 512): "the slowest Hiera combination, ~1.4x Hiera-T at 512 px (itself the "
    "grid's second slowest row)",
    ("litemedsam_tinyvit", 352): "LiteMedSAM's stride-1 patch embedding keeps its first stage at full "
    "resolution: its 256 px row is already the grid's slowest (~2 min on the shared 2-core machine) and "
    "352 px costs ~2x that; its weights are for 256 px",
    ("litemedsam_tinyvit", 512): "as LiteMedSAM at 352 px, ~4x the 256 px cost",
}
UNET_LABEL = "monai UNet (CNN ref)"
PLACEMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stage adapters", ("model.adapter.placement=stage",)),
    ("block adapters", ("model.adapter.placement=block",)),
    ("attention LoRA", ("model.adapter.placement=none", "model.attention_lora.enabled=true")),
    ("decoder only", ("model.adapter.placement=none",)),
)
PLACEMENT_TARGET_GIB = 6.0
VOLUME_TARGET_S = 30.0
GIB = 1024.0**3


# ------------------------------------------------------------------------------ configurations
@dataclass(frozen=True)
class Knobs:
    """Benchmark-only settings of a configuration (``bench.*`` overrides).

    Attributes:
        infer_batch: slices per ``predict_logits`` call.
        threads: torch intra-op threads while this configuration runs (0 = process setting).
        channels_last: ``off``, ``decoder`` (decoder weights in channels-last) or ``all``
            (whole model and input).
        compile: ``torch.compile`` the inference call (compile time is the warm-up).
        merge_lora: fold attention LoRA into the weights before inference (as inference does).
        hiera_blocks: ``unpadded`` (s2unet's Hiera blocks, which skip projecting window
            padding) or ``official`` (sam2's own block code, same weights and outputs).
        malloc: ``process`` (the ``--malloc`` setting), ``reuse`` or ``default``: switched
            before each of this configuration's steps, so both can be compared in one process.
    """

    infer_batch: int = 8
    threads: int = 0
    channels_last: str = "off"
    compile: bool = False
    merge_lora: bool = True
    hiera_blocks: str = "unpadded"
    malloc: str = "process"


_KNOB_CHOICES = {
    "channels_last": ("off", "decoder", "all"),
    "hiera_blocks": ("unpadded", "official"),
    "malloc": ("process", "reuse", "default"),
}


@dataclass(frozen=True)
class Case:
    """One configuration to measure.

    Attributes:
        label: row name in the tables.
        overrides: ``load_config`` overrides (model, image size, training batch...).
        knobs: benchmark-only settings.
        phases: which of ``train`` / ``infer`` to time.
    """

    label: str
    overrides: tuple[str, ...]
    knobs: Knobs = Knobs()
    phases: tuple[str, ...] = PHASES


@dataclass(frozen=True)
class Settings:
    """How to measure (the same for every configuration of a run).

    Attributes:
        warmup: untimed steps after the (also untimed) FLOP-counting step.
        repeats: timed steps; the median is reported.
        min_repeats: fewest timed steps when ``phase_budget_s`` cuts repeats short.
        phase_budget_s: stop adding repeats once a phase has used this much time (0 = never),
            so a slow configuration on a loaded machine cannot blow the run's time limit.
        device: ``cpu``, ``cuda``...
        threads: torch intra-op threads of the measuring process (0 = torch default).
    """

    warmup: int = 1
    repeats: int = 3
    min_repeats: int = 2
    phase_budget_s: float = 0.0
    device: str = "cpu"
    threads: int = 0


def split_overrides(items: Iterable[str]) -> tuple[list[str], Knobs]:
    """Separate ``bench.*`` knobs from config overrides.

    Args:
        items: ``key.sub=value`` strings; empty strings are ignored.

    Returns:
        The config overrides (in order) and the knobs.

    Raises:
        ValueError: an unknown ``bench.*`` key or a value of the wrong type.
    """
    config: list[str] = []
    values: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(Knobs)}
    for item in (i.strip() for i in items):
        if not item:
            continue
        if not item.startswith("bench."):
            config.append(item)
            continue
        if "=" not in item:
            raise ValueError(f"{item!r}: expected bench.key=value")
        key, raw = item[len("bench."):].split("=", 1)
        if key not in names:
            raise ValueError(f"unknown knob bench.{key}; known: {', '.join('bench.' + n for n in names)}")
        value = yaml.safe_load(raw)
        kind = type(getattr(Knobs(), key))
        if key == "channels_last" and value is False:  # YAML reads "off" as False
            value = "off"
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"bench.{key}: expected {kind.__name__}, got {raw!r}")
        if key in _KNOB_CHOICES and value not in _KNOB_CHOICES[key]:
            raise ValueError(f"bench.{key}: one of {_KNOB_CHOICES[key]}, got {value!r}")
        values[key] = value
    return config, Knobs(**values)


def make_case(label: str, overrides: Iterable[str], base: Sequence[str] = (), phases: Sequence[str] = PHASES) -> Case:
    """A configuration from base overrides followed by specific ones (later ones win).

    Args:
        label: row name.
        overrides: the configuration's own overrides (config keys and ``bench.*`` knobs).
        base: overrides applied first (random weights, default batch sizes...).
        phases: which phases to time.

    Returns:
        The case; its config is validated here so that a typo fails before any measuring.
    """
    from s2unet.config import load_config

    config, knobs = split_overrides([*base, *overrides])
    load_config(None, config)  # raises ConfigError naming the bad key
    return Case(label, tuple(config), knobs, tuple(phases))


def parse_compare_arg(text: str) -> list[str]:
    """One ``--compare`` argument: comma-separated overrides (``""`` = the defaults).

    A comma inside brackets belongs to a list value (``model.decoder_channels=[64,32,16]``).
    """
    items, depth, current = [], 0, []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


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


def peak_rss_bytes() -> int:
    """Peak resident memory since the last reset (VmHWM), else since the process started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def process_peak_rss_bytes() -> int:
    """Peak resident memory over this process's whole life (``ru_maxrss``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> Optional[int]:
    """Resident memory now (VmRSS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


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


# ------------------------------------------------------------------------------ the model runner
def use_official_hiera_blocks(model: torch.nn.Module) -> None:
    """Run a model's Hiera blocks with sam2's own code (``bench.hiera_blocks=official``)."""
    from sam2.modeling.backbones.hieradet import MultiScaleBlock

    from s2unet.models.encoders.hiera import UnpaddedWindowBlock

    for module in model.modules():
        if isinstance(module, UnpaddedWindowBlock):
            module.__class__ = MultiScaleBlock


class Runner:
    """A built model with its optimiser and inputs, able to run one step of either phase.

    Args:
        case: the configuration.
        device: where to run.
    """

    def __init__(self, case: Case, device: torch.device) -> None:
        from s2unet.config import load_config
        from s2unet.engine.precision import resolve_amp
        from s2unet.losses import build_loss
        from s2unet.models import create_model

        self.case = case
        self.knobs = case.knobs
        self.device = device
        self.cfg = load_config(None, list(case.overrides))
        torch.manual_seed(0)
        t0 = time.perf_counter()
        self.model = create_model(self.cfg).to(device)
        self.build_s = time.perf_counter() - t0
        if self.knobs.hiera_blocks == "official":
            use_official_hiera_blocks(self.model)
        self.counts = self.model.parameter_counts()
        self.encoder: Optional[torch.nn.Module] = getattr(self.model, "encoder", None)
        self.encoder_trains = bool(getattr(self.model, "encoder_trains", True))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        t = self.cfg.train
        self.optimizer = torch.optim.AdamW(self.params, lr=t.lr, weight_decay=t.weight_decay)
        self.loss = build_loss(self.cfg.loss, multiclass=self.cfg.data.task == "multiclass")
        self.amp = resolve_amp(t.amp, device).dtype
        size, batch = self.cfg.data.image_size, t.batch_size
        gen = torch.Generator().manual_seed(0)
        self.memory_format = torch.channels_last if self.knobs.channels_last == "all" else torch.contiguous_format
        self.x_train = torch.rand(batch, 3, size, size, generator=gen).to(device, memory_format=self.memory_format)
        if self.cfg.data.task == "multiclass":
            target = torch.randint(0, self.cfg.data.num_classes, (batch, size, size), generator=gen)
        else:  # sparse foreground, like the lesion masks
            target = (torch.rand(batch, self.cfg.out_channels, size, size, generator=gen) > 0.95).float()
        self.y_train = target.to(device)
        self.x_infer = torch.rand(self.knobs.infer_batch, 3, size, size, generator=gen).to(
            device, memory_format=self.memory_format)
        if self.knobs.channels_last == "all":
            self.model.to(memory_format=torch.channels_last)
        elif self.knobs.channels_last == "decoder":
            getattr(self.model, "decoder", self.model).to(memory_format=torch.channels_last)
        self.prepared: Optional[str] = None
        self.infer_fn: Callable[[torch.Tensor], torch.Tensor] = self.model.predict_logits
        self.merged_layers = 0
        self.encoder_autograd: Optional[bool] = None

    @property
    def label(self) -> str:
        return self.case.label

    def images(self, phase: str) -> int:
        """Images one step of ``phase`` processes."""
        return self.x_train.shape[0] if phase == "train" else self.x_infer.shape[0]

    def prepare(self, phase: str) -> None:
        """Put the model in the phase's mode; for inference merge LoRA once (irreversible)."""
        if phase == "train":
            if self.prepared == "infer":
                raise RuntimeError("train after infer: inference merged LoRA into the weights")
            self.model.train()
        elif self.prepared != "infer":
            self.model.eval()
            if self.knobs.merge_lora:
                self.merged_layers = self.model.merge_lora()
        self.prepared = phase

    def compile_inference(self) -> None:
        """Swap in a compiled inference call (after FLOP counting, which needs eager ops)."""
        if self.knobs.compile:
            self.infer_fn = torch.compile(self.model.predict_logits)

    def train_step(self) -> None:
        """Forward through deep supervision, loss, backward, clip and AdamW step, as the trainer."""
        from s2unet.engine.precision import autocast

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp):
            outputs = self.model(self.x_train)
            loss = self.loss(outputs, self.y_train)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.grad_clip)
        self.optimizer.step()

    def infer_step(self) -> None:
        """One batched ``predict_logits`` without autograd bookkeeping."""
        with torch.inference_mode():
            self.infer_fn(self.x_infer)

    def step(self, phase: str) -> float:
        """Run one step of ``phase``; returns its wall time in seconds."""
        if self.knobs.threads and torch.get_num_threads() != self.knobs.threads:
            torch.set_num_threads(self.knobs.threads)
        if self.knobs.malloc != "process":
            keep_freed_memory(self.knobs.malloc == "reuse")
        run = self.train_step if phase == "train" else self.infer_step
        sync(self.device)
        t0 = time.perf_counter()
        run()
        sync(self.device)
        return time.perf_counter() - t0

    def counted_step(self, phase: str) -> dict[str, Optional[float]]:
        """One untimed step under the FLOP counter; FLOPs per image of the model and the encoder.

        A hook on the encoder reads the counter as the encoder's forward starts and ends (so
        adapters hooked in front of its blocks count as encoder work), and records whether its
        outputs carry autograd history (they must not when nothing in it trains).
        """
        counter = flop_counter()
        marks: list[int] = []

        def before(_m: torch.nn.Module, _args: tuple) -> None:
            marks.append(counter.get_total_flops())

        def after(_m: torch.nn.Module, _args: tuple, out: Any) -> None:
            marks.append(counter.get_total_flops())
            if phase == "train":
                tensors = out if isinstance(out, (list, tuple)) else [out]
                self.encoder_autograd = any(t.requires_grad for t in tensors if isinstance(t, torch.Tensor))

        hooks = []
        if self.encoder is not None:
            hooks = [self.encoder.register_forward_pre_hook(before), self.encoder.register_forward_hook(after)]
        try:
            with counter:
                seconds = self.step(phase)
        finally:
            for h in hooks:
                h.remove()
        n = self.images(phase)
        encoder = (marks[1] - marks[0]) / n if len(marks) >= 2 else None
        return {"flops_per_image": counter.get_total_flops() / n, "encoder_flops_per_image": encoder,
                "counted_step_s": seconds}


def measure_cases(cases: Sequence[Case], settings: Settings) -> list[dict[str, Any]]:
    """Build every configuration and time its phases, interleaving configurations.

    Within each phase the configurations take turns step by step (A, B, A, B...), so load from
    other jobs on a shared machine falls on all of them alike. Per configuration and phase:
    one untimed step under the FLOP counter, ``warmup`` untimed steps, then up to ``repeats``
    timed steps (fewer, but at least ``min_repeats``, once ``phase_budget_s`` is used up).
    Peak memory is per phase and only meaningful with one configuration per process.

    Args:
        cases: the configurations (one for grid rows, several for ``--compare``).
        settings: how to measure.

    Returns:
        One result dict per case, in order.
    """
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    alone = len(cases) == 1
    results: list[dict[str, Any]] = []
    runners: list[Runner] = []
    for case in cases:
        runner = Runner(case, device)
        runners.append(runner)
        results.append({
            "label": case.label, "overrides": list(case.overrides), "knobs": dataclasses.asdict(case.knobs),
            "arch": runner.cfg.model.arch, "encoder": runner.cfg.model.encoder if runner.cfg.model.arch == "s2unet" else None,
            "image_size": runner.cfg.data.image_size, "train_batch": runner.cfg.train.batch_size,
            "infer_batch": case.knobs.infer_batch, "params": runner.counts, "build_s": runner.build_s,
            "encoder_trains": runner.encoder_trains, "amp": str(runner.amp) if runner.amp else None,
            "threads": torch.get_num_threads() if not case.knobs.threads else case.knobs.threads,
            "rss_after_build_bytes": current_rss_bytes(), "phases": {},
        })
    probe = MatmulProbe(device)
    for phase in PHASES:
        active = [(r, res) for r, res in zip(runners, results) if phase in r.case.phases]
        if not active:
            continue
        track = alone and reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        records: dict[int, dict[str, Any]] = {}
        for runner, _ in active:
            runner.prepare(phase)
            records[id(runner)] = {**runner.counted_step(phase), "warmup_s": [], "times_s": []}
            if phase == "infer":
                runner.compile_inference()
        for _ in range(settings.warmup):
            if settings.phase_budget_s and time.perf_counter() - started > settings.phase_budget_s / 2:
                break  # a slow phase: the counted step already warmed caches and allocator up
            for runner, _ in active:
                records[id(runner)]["warmup_s"].append(runner.step(phase))
        first_probe = len(probe.times)
        for i in range(settings.repeats):
            spent = time.perf_counter() - started
            if i >= settings.min_repeats and settings.phase_budget_s and spent > settings.phase_budget_s:
                break
            for runner, _ in active:
                records[id(runner)]["times_s"].append(runner.step(phase))
            probe.sample()  # the matmul rate under the same load as this round's steps
        for runner, res in active:
            rec = records[id(runner)]
            step = median(rec["times_s"])
            n = runner.images(phase)
            rec.update(
                batch=n, repeats=len(rec["times_s"]), median_step_s=step,
                matmul_gflops_during=probe.gflops(probe.times[first_probe:]),
                seconds_per_image=ratio(step, n), images_per_s=ratio(n, step),
                peak_rss_bytes=peak_rss_bytes() if track else None,
                peak_cuda_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" and alone else None,
            )
            if phase == "train":
                rec["encoder_autograd"] = runner.encoder_autograd
            else:
                rec["merged_lora_layers"] = runner.merged_layers
            res["phases"][phase] = rec
    for res in results:
        res["process_peak_rss_bytes"] = process_peak_rss_bytes() if alone else None
        res["matmul_gflops_during"] = probe.gflops()
        res["matmul_samples_s"] = probe.times
    return results


# ------------------------------------------------------------------------------ process isolation
_PRELOAD = ["torch", "yaml", "s2unet.config", "s2unet.models", "s2unet.losses", "s2unet.engine.precision"]
_CONTEXT: Optional[multiprocessing.context.BaseContext] = None


def _context() -> multiprocessing.context.BaseContext:
    """A fork server that imports torch, s2unet and monai once (about 10 s) for all children.

    Each measurement then forks from it: a fresh process (its own memory high-water mark,
    untouched OpenMP state) without paying the imports again.
    """
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        _CONTEXT = ctx
    return _CONTEXT


_REUSE_MEMORY = True  # --malloc: set by main() before the first child starts


def _child_call(fn: Callable[..., Any], reuse_memory: bool, args: tuple) -> Any:
    """In a measuring child: the allocator setting the train/infer commands use, then ``fn``."""
    if reuse_memory:
        keep_freed_memory()
    return fn(*args)


def run_isolated(fn: Callable[..., Any], *args: Any, isolate: bool = True) -> Any:
    """Call ``fn(*args)`` in a fresh child process (or here when ``isolate`` is False)."""
    if not isolate:
        return fn(*args)
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=_context(), max_tasks_per_child=1) as pool:
        return pool.submit(_child_call, fn, _REUSE_MEMORY, args).result()


def measure_isolated(cases: Sequence[Case], settings: Settings, isolate: bool) -> list[dict[str, Any]]:
    """:func:`measure_cases` in a child; a failure becomes an ``error`` entry, not an abort."""
    try:
        return run_isolated(measure_cases, list(cases), settings, isolate=isolate)
    except Exception as exc:  # noqa: BLE001 - one broken configuration must not lose the others
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return [{"label": c.label, "overrides": list(c.overrides), "error": detail} for c in cases]


# ------------------------------------------------------------------------------ machine + output
def machine_info() -> dict[str, Any]:
    """CPU model, cores, flags that matter for speed, torch build and threads."""
    model, flags = platform.processor() or "unknown", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "", platform.machine()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    info: dict[str, Any] = {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": [f for f in wanted if f in flags.split()],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # The kernels torch dispatches to; ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA can hold them
        # below what the flags offer (e.g. a run without AMX on an AMX machine).
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1)
    except (ValueError, OSError):
        pass
    return info


def load_average() -> Optional[list[float]]:
    """1, 5 and 15 minute load averages (other jobs on a shared machine show up here)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: ``-`` for missing values, fixed decimals for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_params(counts: Optional[dict[str, Any]]) -> str:
    """``trainable / total`` in millions."""
    if not counts:
        return "-"
    return f"{counts['trainable'] / 1e6:.2f}M / {counts['total'] / 1e6:.1f}M"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def floor_ratio(phase: dict[str, Any], gflops: float) -> Optional[float]:
    """Measured time per image over the matmul floor (counted FLOPs / measured matmul rate)."""
    flops = phase.get("flops_per_image")
    per_image = phase.get("seconds_per_image")
    if not flops or per_image is None or not gflops:
        return None
    return per_image / (flops / (gflops * 1e9))


def add_floors(results: list[dict[str, Any]], gflops: float) -> None:
    """Store each phase's floor (seconds per image) and its time as a multiple of the floor.

    ``x_floor`` uses the machine's rate (the best matmul rate of the run); ``x_floor_at_load``
    the rate probed between the phase's own timed rounds, which cancels most background load.
    """
    for res in results:
        for phase in res.get("phases", {}).values():
            during = phase.get("matmul_gflops_during")
            flops = phase.get("flops_per_image")
            phase["floor_s_per_image"] = flops / (gflops * 1e9) if flops else None
            phase["x_floor"] = floor_ratio(phase, gflops)
            phase["x_floor_at_load"] = floor_ratio(phase, during) if during else None


def gib(value: Optional[float]) -> Optional[float]:
    return value / GIB if value is not None else None


class Report:
    """What one run measured: machine, load, floor, results; written as JSON and Markdown."""

    def __init__(self, mode: str, args: argparse.Namespace) -> None:
        self.mode = mode
        self.started = time.perf_counter()
        self.data: dict[str, Any] = {
            "mode": mode,
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine_info(),
            "load_average": {"start": load_average()},
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
            "notes": [],
        }

    def floor(self, device: str, isolate: bool = True, threads: int = 0) -> float:
        """Measure the dense fp32 matmul rate now (in a child, like every measurement, so it
        runs with the same OpenMP settings); returns the best of these start/end probes so far
        (``machine_rate`` adds the probes between timed rounds)."""
        rate = run_isolated(matmul_rate_child, device, threads, isolate=isolate)
        self.data.setdefault("matmul_fp32", []).append({**rate, "load_average": load_average()})
        return max(r["gflops"] for r in self.data["matmul_fp32"])

    def machine_rate(self, probed: float, *result_lists: list[dict[str, Any]]) -> float:
        """The rate the floors use: the best median rate probed in the run, at its start and end
        (``probed``) and between every phase's timed rounds. The host's speed drifts (87-186
        GFLOP/s within one grid here, nothing else running), so the probes at the ends alone can
        miss its best."""
        during = [
            phase.get("matmul_gflops_during")
            for results in result_lists for res in results for phase in res.get("phases", {}).values()
        ]
        best = max([probed, *(d for d in during if d)])
        self.data["machine_gflops"] = best
        return best

    def finish(self, out_dir: Path, name: str, markdown: str) -> None:
        """Record the end load and time, write ``name``.json and ``name``.md, print the Markdown."""
        self.data["load_average"]["end"] = load_average()
        self.data["wall_s"] = round(time.perf_counter() - self.started, 1)
        header = self.header()
        text = header + "\n\n" + markdown.strip() + "\n"
        atomic_write(out_dir / f"{name}.json", json.dumps(self.data, indent=1, default=str) + "\n")
        atomic_write(out_dir / f"{name}.md", text)
        print(text)
        print(f"wrote {out_dir / name}.json and .md ({self.data['wall_s']} s)")

    def threads(self) -> Any:
        """Thread counts the measurements ran with (from the results, else this process's)."""
        res = self.data.get("results")
        rows = res if isinstance(res, list) else [res] if isinstance(res, dict) else []
        counts = sorted({r["threads"] for r in rows if isinstance(r, dict) and "threads" in r})
        return "/".join(map(str, counts)) if counts else self.data["machine"]["torch_threads"]

    def header(self) -> str:
        m, load = self.data["machine"], self.data["load_average"]
        rates = self.data.get("matmul_fp32", [])
        lines = [
            f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs ({', '.join(m['cpu_flags']) or 'no AVX flags'}), "
            f"torch {m['torch']}, {self.threads()} torch threads"
            + (f", CUDA {m['cuda']}" if m.get("cuda") else "")
            + (f", oneDNN limited to ONEDNN_MAX_CPU_ISA={m['onednn_max_cpu_isa']}" if m.get("onednn_max_cpu_isa") else "")
            + f"; {self.data['date_utc']}.",
            f"Load average (1/5/15 min) at start {load.get('start')}, at end {load.get('end')}: "
            "other jobs shared this machine, so absolute times are noisy; ratios measured in one "
            "interleaved run (`--compare`) are the robust numbers.",
            f"OMP_WAIT_POLICY={self.data['settings'].get('omp_wait_policy_effective') or '(unset: libgomp spins)'} "
            "in the measuring processes; glibc malloc "
            + ("keeps freed memory for reuse (`s2unet.runtime.keep_freed_memory`, as train/infer do)."
               if self.data["settings"].get("malloc", "default") == "reuse" else "as glibc's default (`--malloc default`)."),
        ]
        if rates:
            lines.append(
                "Dense fp32 matmul (2048^2, median): "
                + ", ".join(f"{r['gflops']:.0f} GFLOP/s" for r in rates)
                + "; floors use the best median probed in the run (these, and the probes between timed "
                + f"rounds): {self.data.get('machine_gflops') or max(r['gflops'] for r in rates):.0f} GFLOP/s."
            )
        return "\n".join(lines)


# ------------------------------------------------------------------------------ modes
def base_overrides(args: argparse.Namespace) -> list[str]:
    """Overrides every configuration starts from: speed-measurement weights and batch sizes."""
    return [f"model.weights={args.weights}", f"train.batch_size={args.batch}", f"bench.infer_batch={args.infer_batch}"]


def settings_from(args: argparse.Namespace, budget: float) -> Settings:
    return Settings(warmup=args.warmup, repeats=args.repeats, min_repeats=min(2, args.repeats),
                    phase_budget_s=budget, device=args.device, threads=args.threads)


def grid_cases(args: argparse.Namespace) -> tuple[list[Case], list[str]]:
    """The grid's configurations and the notes on what it skips."""
    encoders = args.encoders.split(",") if args.encoders else list(GRID_ENCODERS)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(GRID_SIZES)
    base = base_overrides(args)
    cases, notes = [], []
    for enc in encoders:
        for size in sizes:
            if (enc, size) in SLOW_COMBOS and not args.full:
                notes.append(f"skipped {enc} at {size} px (run with --full): {SLOW_COMBOS[(enc, size)]}")
                continue
            cases.append(make_case(f"{enc}", [f"model.encoder={enc}", f"data.image_size={size}"], base))
    if not args.no_unet:
        for size in sizes:
            cases.append(make_case(UNET_LABEL, ["model.arch=unet", f"data.image_size={size}"], base))
    return cases, notes


def run_grid(args: argparse.Namespace) -> None:
    """Default mode: every configuration in its own process; table of speed, floor and memory."""
    report = Report("grid", args)
    cases, notes = grid_cases(args)
    report.data["notes"] += notes
    report.floor(args.device, not args.no_isolate, args.threads)
    results = []
    for case in cases:
        size = dict(o.split("=", 1) for o in case.overrides).get("data.image_size")
        print(f"[{time.strftime('%H:%M:%S')}] {case.label} @ {size} px (load {load_average()})", flush=True)
        results.extend(measure_isolated([case], settings_from(args, args.phase_budget), not args.no_isolate))
    gflops = report.machine_rate(report.floor(args.device, not args.no_isolate, args.threads), results)
    add_floors(results, gflops)
    report.data["results"] = results
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["label"], "-", "error: " + r["error"].splitlines()[-1][:80]] + ["-"] * 9)
            continue
        t, i = r["phases"].get("train", {}), r["phases"].get("infer", {})
        rows.append([
            r["label"], r["image_size"], f"{t.get('median_step_s', 0):.2f} (b{r['train_batch']})",
            t.get("images_per_s"), pair_cell(t.get("x_floor"), t.get("x_floor_at_load")),
            i.get("images_per_s"), pair_cell(i.get("x_floor"), i.get("x_floor_at_load")),
            pair_cell(gib(t.get("peak_rss_bytes")), gib(i.get("peak_rss_bytes"))), fmt_params(r["params"]),
            gflop_cell(i.get("encoder_flops_per_image")), gflop_cell(i.get("flops_per_image")),
            gflop_cell(t.get("flops_per_image"), macs=False),
        ])
    header = ["model", "px", "train s/step (batch)", "train img/s", "train x floor (machine / at load)",
              "infer slices/s", "infer x floor (machine / at load)", "peak RSS GiB (train / infer)",
              "trainable / total params", "encoder GMAC/img", "model GMAC/img", "train GFLOP/img"]
    md = markdown_table(header, rows)
    md += "\n\n" + "\n".join(f"- {n}" for n in [
        f"{args.repeats} timed repeats (median; fewer, >= 2, when a phase exceeded {args.phase_budget:.0f} s), "
        f"{args.warmup} warm-up step(s) after an untimed FLOP-counting step; training batch {args.batch}, "
        f"inference batch {args.infer_batch}; model.weights={args.weights} (same compute as real weights).",
        *notes,
    ])
    report.finish(Path(args.out), "speed", md)


def pair_cell(a: Optional[float], b: Optional[float], digits: int = 2) -> str:
    """Two numbers in one cell, ``a / b``."""
    return f"{fmt(a, digits)} / {fmt(b, digits)}"


def gflop_cell(flops: Optional[float], macs: bool = True) -> Optional[float]:
    """GMAC (FLOPs / 2) or GFLOP per image."""
    if flops is None:
        return None
    return flops / 2e9 if macs else flops / 1e9


def run_compare(args: argparse.Namespace) -> None:
    """Several configurations interleaved in one process; ratios of medians to the first."""
    report = Report("compare", args)
    base = base_overrides(args) + [f"data.image_size={args.size}"] + ([f"model.encoder={args.encoder}"] if args.encoder else [])
    phases = tuple(p for p in PHASES if p in args.phases.split(","))
    cases = [make_case(f"{chr(65 + k)}: {spec or '(defaults)'}", parse_compare_arg(spec), base, phases)
             for k, spec in enumerate(args.compare)]
    report.floor(args.device, not args.no_isolate, args.threads)
    results = measure_isolated(cases, settings_from(args, 0.0), not args.no_isolate)
    gflops = report.machine_rate(report.floor(args.device, not args.no_isolate, args.threads), results)
    add_floors(results, gflops)
    report.data["results"] = results
    report.data["notes"].append("interleaved in one process: peak memory is not per configuration and is not reported")
    if any("error" in r for r in results):
        md = "\n".join(f"- {r['label']}: {r.get('error', 'ok')}" for r in results)
        report.finish(Path(args.out), f"compare{('_' + args.tag) if args.tag else ''}", md)
        return
    ref = results[0]["phases"]
    rows = []
    for r in results:
        row: list[Any] = [r["label"]]
        for phase in phases:
            p = r["phases"][phase]
            pair = paired_ratio(p["times_s"], ref[phase]["times_s"])
            row += [p["median_step_s"], p["images_per_s"], ratio(p["median_step_s"], ref[phase]["median_step_s"]), pair,
                    pair_cell(p.get("x_floor"), p.get("x_floor_at_load"))]
        row.append(fmt_params(r["params"]))
        rows.append(row)
    header = ["configuration"]
    for phase in phases:
        header += [f"{phase} s/step", f"{phase} img/s", f"{phase} time / A (medians)",
                   f"{phase} time / A (median of paired)", f"{phase} x floor (machine / at load)"]
    header.append("trainable / total params")
    first = results[0]
    md = markdown_table(header, rows) + (
        f"\n\n- {first['image_size']} px, training batch {first['train_batch']}, inference batch {first['infer_batch']}, "
        f"{args.repeats} interleaved repeats (A, B, A, B...) after {args.warmup} warm-up step(s); "
        "< 1 means faster than A. The paired column is the median of per-round ratios (robust to slow drifts in load)."
    )
    warm = [f"{r['label']}: first {phase} step(s) {', '.join(f'{s:.2f}' for s in r['phases'][phase]['warmup_s'])} s"
            for r in results for phase in phases if r["knobs"]["compile"]]
    if warm:
        md += "\n- compile warm-up (includes compilation): " + "; ".join(warm)
    report.finish(Path(args.out), f"compare{('_' + args.tag) if args.tag else ''}", md)


def paired_ratio(times: Sequence[float], ref: Sequence[float]) -> Optional[float]:
    """Median over rounds of time / reference time (rounds ran back to back)."""
    pairs = [a / b for a, b in zip(times, ref) if b]
    return median(pairs)


def run_placements(args: argparse.Namespace) -> None:
    """Adapter placement trade-off at Hiera-T, 352 px, batch 8 training.

    Two passes, each with the one measuring function: every placement alone in a fresh process
    (its peak memory, whether the encoder ran with autograd; one timed step), then all of them
    interleaved in one process for the step times and their ratios to stage adapters.
    """
    report = Report("placements", args)
    base = [f"model.weights={args.weights}", "model.encoder=sam2.1_hiera_tiny", f"data.image_size={args.size}",
            f"train.batch_size={args.placement_batch}"]
    cases = [make_case(label, ov, base, phases=("train",)) for label, ov in PLACEMENTS]
    report.floor(args.device, not args.no_isolate, args.threads)
    alone = []
    memory_settings = dataclasses.replace(settings_from(args, 0.0), warmup=0, repeats=1, min_repeats=1)
    for case in cases:
        print(f"[{time.strftime('%H:%M:%S')}] {case.label} alone, for memory (load {load_average()})", flush=True)
        alone.extend(measure_isolated([case], memory_settings, not args.no_isolate))
    print(f"[{time.strftime('%H:%M:%S')}] all placements interleaved, for time (load {load_average()})", flush=True)
    together = measure_isolated(cases, settings_from(args, 0.0), not args.no_isolate)
    gflops = report.machine_rate(report.floor(args.device, not args.no_isolate, args.threads), alone, together)
    add_floors(alone, gflops)
    add_floors(together, gflops)
    report.data["results"] = {"alone": alone, "interleaved": together}
    ref = together[0].get("phases", {}).get("train") if "error" not in together[0] else None
    rows = []
    for mem, tim in zip(alone, together):
        if "error" in mem or "error" in tim:
            rows.append([mem["label"], "error: " + (mem.get("error") or tim["error"]).splitlines()[-1][:80]] + ["-"] * 7)
            continue
        m, t = mem["phases"]["train"], tim["phases"]["train"]
        peak = gib(m["peak_rss_bytes"])
        rows.append([
            mem["label"], fmt_params(mem["params"]), t["median_step_s"], t["images_per_s"],
            paired_ratio(t["times_s"], ref["times_s"]) if ref else None,
            pair_cell(t["x_floor"], t["x_floor_at_load"]), peak,
            None if peak is None else peak < PLACEMENT_TARGET_GIB, m.get("encoder_autograd"),
        ])
    header = ["placement", "trainable / total params", f"train s/step (batch {args.placement_batch})", "img/s",
              "time / stage", "x floor (machine / at load)", "peak RSS GiB", f"< {PLACEMENT_TARGET_GIB:.0f} GiB",
              "encoder autograd"]
    md = markdown_table(header, rows) + (
        f"\n\n- Hiera-T (SAM2.1) at {args.size} px, batch {args.placement_batch}, forward + backward through the "
        "three deep-supervision heads + AdamW step.\n"
        f"- Times: the four placements interleaved in one process (A, B, C, D, A, ...), {args.repeats} rounds after "
        f"{args.warmup} warm-up round(s); time / stage is the median of per-round ratios.\n"
        "- Peak RSS: each placement alone in a fresh process (its training only; Python, torch and imports "
        "included, about 0.6 GiB).\n"
        "- encoder autograd: whether the encoder's outputs carried autograd history in training; decoder-only "
        "must say no (S2UNet.features runs the frozen encoder under no_grad)."
    )
    report.finish(Path(args.out), "placements", md)


# ------------------------------------------------------------------------------ end-to-end volume
def synthetic_volume(path: Path, slices: int = 100, size: int = 256, seed: int = 0) -> None:
    """A uint8 CT-like NIfTI (x, y, slice): a bright body ellipse, dark lungs and noise."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    body = (xx / 0.45) ** 2 + (yy / 0.35) ** 2 < 1
    lungs = ((np.abs(xx) - 0.18) / 0.13) ** 2 + (yy / 0.22) ** 2 < 1
    base = np.where(body, 150, 10) - np.where(lungs, 110, 0)
    vol = np.empty((size, size, slices), dtype=np.uint8)
    for k in range(slices):
        vol[:, :, k] = np.clip(base.T + rng.normal(0, 12, (size, size)), 0, 255).astype(np.uint8)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))


def volume_child(encoder: str, weights: str, slices: int, batch: int, runs: int, threads: int) -> dict[str, Any]:
    """Write a synthetic volume and a random-weight checkpoint, then time ``run_inference``."""
    if threads:
        torch.set_num_threads(threads)
    from s2unet.config import load_config
    from s2unet.engine.checkpoint import atomic_save, model_payload
    from s2unet.inference.run import run_inference
    from s2unet.models import create_model

    out: dict[str, Any] = {"encoder": encoder, "slices": slices, "batch_size": batch, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="s2unet_bench_") as tmp:
        root = Path(tmp)
        image = root / "ct_bench.nii.gz"
        synthetic_volume(image, slices)
        cfg = load_config(None, [f"model.encoder={encoder}", f"model.weights={weights}", "data.kind=volume",
                                 "data.image_size=256", "data.labels=[masks_infection]"])
        ckpt = root / "best.pt"
        atomic_save(model_payload(create_model(cfg), cfg, 0.5, {}), ckpt)
        out["runs"] = []
        probe = MatmulProbe(torch.device("cpu"))
        for k in range(runs):
            for _ in range(3):
                probe.sample()
            reset_peak_rss()
            t0 = time.perf_counter()
            summary = run_inference(ckpt, image, root / "out", overwrite=k > 0, batch_size=batch, show_progress=False)
            wall = time.perf_counter() - t0
            first = len(probe.times) - 3
            for _ in range(3):
                probe.sample()  # before and after the run: the machine's rate under the load it ran with
            written = root / "out" / "ct_bench_pred.nii.gz"
            out["runs"].append({
                "wall_s": wall, "seconds_predict": summary["seconds_predict"], "seconds_total": summary["seconds_total"],
                "slices_per_s_predict": summary["slices_per_second"], "slices_per_s_end_to_end": slices / wall,
                "prediction_written": written.is_file(), "peak_rss_bytes": peak_rss_bytes(),
                "matmul_gflops_around": probe.gflops(probe.times[first:]),
            })
    return out


def run_volume(args: argparse.Namespace) -> None:
    """``--volume``: read -> written NIfTI through the inference entry point, Hiera-T."""
    report = Report("volume", args)
    print(f"[{time.strftime('%H:%M:%S')}] volume: {args.volume_slices} slices x 256^2 through run_inference", flush=True)
    res = run_isolated(volume_child, args.volume_encoder, args.weights, args.volume_slices, args.volume_batch,
                       args.volume_runs, args.threads, isolate=not args.no_isolate)
    report.data["results"] = res
    rows = []
    for k, r in enumerate(res["runs"]):
        # The model part is ~1.4x its matmul floor (speed.md), so it scales with the matmul rate;
        # the rest (reading, post-processing, writing) is left as measured.
        at = r["matmul_gflops_around"]
        scaled = r["wall_s"] - r["seconds_predict"] * (1 - at / args.reference_gflops) if at else None
        r["wall_s_scaled_to_reference"] = scaled
        rows.append([f"run {k + 1}" + (" (first)" if k == 0 else ""), r["wall_s"], r["slices_per_s_end_to_end"],
                     r["seconds_predict"], r["slices_per_s_predict"], gib(r["peak_rss_bytes"]),
                     r["wall_s"] < VOLUME_TARGET_S, r["prediction_written"], at, scaled])
    header = ["run", "read -> written NIfTI s", "slices/s end-to-end", "model s (predict_volume)", "slices/s model",
              "peak RSS GiB", f"< {VOLUME_TARGET_S:.0f} s", "NIfTI written", "matmul GFLOP/s around the run",
              f"wall s if matmul ran at {args.reference_gflops:.0f} GFLOP/s"]
    md = markdown_table(header, rows) + (
        f"\n\n- `s2unet.inference.run.run_inference` on a synthetic {res['slices']}-slice 256 x 256 uint8 NIfTI with a "
        f"{res['encoder']} checkpoint (random weights, stage adapters), batch {res['batch_size']}, {res['threads']} threads; "
        "the wall time covers checkpoint loading, validation, prediction, post-processing, the overlay PNG, the report and "
        "writing the NIfTI. Later runs overwrite the first run's outputs (warm file cache).\n"
        f"- Last column: the model time rescaled from the matmul rate probed just before and after the run to "
        f"{args.reference_gflops:.0f} GFLOP/s (`--reference-gflops`, the idle rate in shared/README.md), the rest "
        "as measured: an estimate of the idle machine, not a measurement."
    )
    report.finish(Path(args.out), "volume", md)


# ------------------------------------------------------------------------------ bf16 check
AMP_ENCODERS = ("sam2.1_hiera_tiny", "mobilesam_tinyvit")


def amp_child(size: int, batch: int, repeats: int, threads: int) -> dict[str, Any]:
    """fp32 against bf16 autocast: a 1024^2 matmul, the probe ``train.amp=auto`` decides by,
    and training steps of each encoder in :data:`AMP_ENCODERS`; plus what ``auto`` picks."""
    if threads:
        torch.set_num_threads(threads)
    from s2unet.engine.precision import measure_cpu_bf16_speedup, resolve_amp

    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    out["matmul_fp32"] = matmul_rate(1024, repeats=5)
    # Emulated bf16 runs at well under 1 GFLOP/s on AVX2: a 1024^2 product takes seconds, so 2 repeats.
    out["matmul_bf16"] = matmul_rate(1024, repeats=2, dtype=torch.bfloat16)
    t0 = time.perf_counter()
    choice = resolve_amp("auto", torch.device("cpu"))  # exactly what train.py decides (cached per machine)
    out["auto"] = {"precision": choice.name, "reason": choice.reason, "decision_s": time.perf_counter() - t0}
    out["probe_fresh"] = measure_cpu_bf16_speedup()  # a second, uncached probe: its spread from run to run
    settings = Settings(warmup=1, repeats=repeats, min_repeats=2, phase_budget_s=30.0, threads=threads)
    workloads: dict[str, Any] = {}
    for encoder in AMP_ENCODERS:
        base = ["model.weights=random", f"model.encoder={encoder}", f"data.image_size={size}", f"train.batch_size={batch}"]
        cases = [make_case(f"{encoder} {name}", base + [f"train.amp='{amp}'"], phases=("train",))
                 for name, amp in (("fp32", "off"), ("bf16", "bf16"))]
        with warnings.catch_warnings():  # the bf16 case is forced on purpose: no "measured slower" warning
            warnings.simplefilter("ignore")
            fp32, bf16 = (r["phases"]["train"] for r in measure_cases(cases, settings))
        speedup = paired_ratio(fp32["times_s"], bf16["times_s"])
        workloads[encoder] = {"fp32": fp32, "bf16": bf16, "speedup": speedup,
                              "faster": "bf16" if speedup is not None and speedup > 1.0 else "fp32"}
    out["training_steps"] = workloads
    # auto's promise: never slower than fp32. fp32 always keeps it; bf16 only if every model trains faster.
    out["never_slower"] = choice.name == "fp32" or all(w["faster"] == "bf16" for w in workloads.values())
    out["matches_faster"] = {enc: w["faster"] == choice.name for enc, w in workloads.items()}
    return out


def run_amp_check(args: argparse.Namespace) -> None:
    """``--amp-check``: is bf16 worth it on this CPU, and is ``resolve_amp("auto")`` right?"""
    report = Report("amp", args)
    res = run_isolated(amp_child, args.amp_size, args.amp_batch, max(2, args.repeats), args.threads,
                       isolate=not args.no_isolate)
    report.data["results"] = res
    f32, b16, probe = res["matmul_fp32"], res["matmul_bf16"], res["probe_fresh"]
    rows = [
        ["1024^2 matmul", f"{f32['gflops']:.1f} GFLOP/s", f"{b16['gflops']:.1f} GFLOP/s", ratio(b16["gflops"], f32["gflops"])],
        ["probe block of `train.amp=auto` (uncached), training step", f"{probe['fp32_s'] * 1e3:.1f} ms",
         f"{probe['bf16_s'] * 1e3:.1f} ms", probe["speedup"]],
    ]
    for encoder, w in res["training_steps"].items():
        rows.append([f"{encoder} training step, {args.amp_batch} x {args.amp_size} px", f"{w['fp32']['median_step_s']:.3f} s",
                     f"{w['bf16']['median_step_s']:.3f} s", w["speedup"]])
    auto = res["auto"]
    matches = ", ".join(f"{enc} {'yes' if ok else 'no'}" for enc, ok in res["matches_faster"].items())
    md = markdown_table(["workload", "fp32", "bf16", "bf16 speed-up (x, > 1 = bf16 faster)"], rows) + (
        f"\n\nTraining steps: stage adapters, loss, backward, AdamW, as `train.py`; fp32 and bf16 interleaved, "
        f"speed-up = median of per-round time ratios.\n\n"
        f"- `train.amp: auto` here: **{auto['precision']}** — {auto['reason']} ({auto['decision_s']:.2f} s to decide).\n"
        f"- The faster precision is auto's choice for: {matches}.\n"
        f"- auto never slower than fp32 on this machine: **{'yes' if res['never_slower'] else 'NO: choice WRONG'}**."
    )
    report.finish(Path(args.out), "amp", md)


# ------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Columns and examples: bench/README.md")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--compare", nargs="+", metavar="OVERRIDES",
                      help="configurations to interleave in one process, each a comma-separated override list")
    mode.add_argument("--placements", action="store_true", help="adapter placement trade-off (Hiera-T, batch 8)")
    mode.add_argument("--volume", action="store_true", help="end-to-end CT volume timing through run_inference")
    mode.add_argument("--amp-check", action="store_true", help="fp32 vs bf16 on this CPU and train.amp=auto's choice")
    p.add_argument("--full", action="store_true", help="grid: also the slowest encoder/size combinations")
    p.add_argument("--encoders", help="grid: comma-separated encoder names (default: the four SAM-family ones)")
    p.add_argument("--sizes", help="grid: comma-separated image sizes (default 256,352,512)")
    p.add_argument("--no-unet", action="store_true", help="grid: leave out the monai UNet reference")
    p.add_argument("--batch", type=int, default=4, help="training batch (default 4; --placements uses --placement-batch)")
    p.add_argument("--infer-batch", type=int, default=8,
                   help="slices per inference call (default 8, as infer.py's --batch-size)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per phase; the median is reported (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the FLOP-counting step (default 1)")
    p.add_argument("--phase-budget", type=float, default=20.0,
                   help="grid: stop adding repeats (keeping >= 2) once a phase used this many seconds (0 = off)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--weights", default="random", help="model.weights: random (default; same compute), default or a path")
    p.add_argument("--size", type=int, default=352, help="--compare / --placements image size (default 352)")
    p.add_argument("--encoder", help="--compare: encoder of every configuration unless it sets its own")
    p.add_argument("--phases", default="train,infer", help="--compare: phases to time (default train,infer)")
    p.add_argument("--tag", default="", help="--compare: suffix of the output file names")
    p.add_argument("--placement-batch", type=int, default=8, help="--placements training batch (default 8)")
    p.add_argument("--volume-slices", type=int, default=100)
    p.add_argument("--volume-batch", type=int, default=8, help="run_inference batch_size (default 8)")
    p.add_argument("--volume-runs", type=int, default=1, help="times to run the volume (default 1)")
    p.add_argument("--volume-encoder", default="sam2.1_hiera_tiny")
    p.add_argument("--reference-gflops", type=float, default=150.0,
                   help="--volume: idle matmul rate to rescale the model time to (default 150, shared/README.md)")
    p.add_argument("--amp-size", type=int, default=256, help="--amp-check training image size (default 256)")
    p.add_argument("--amp-batch", type=int, default=2, help="--amp-check training batch (default 2)")
    p.add_argument("--out", default=str(RESULTS_DIR), help="output folder (default bench/results)")
    p.add_argument("--omp-wait-policy", choices=("passive", "active", "inherit"), default="passive",
                   help="OMP_WAIT_POLICY of the measuring processes (default passive: see README; "
                        "inherit = leave the environment as it is)")
    p.add_argument("--malloc", choices=("reuse", "default"), default="reuse",
                   help="reuse = keep freed memory for reuse, as train/infer do (s2unet.runtime); "
                        "default = glibc's own behaviour (fresh, page-faulted mmap for every large tensor)")
    p.add_argument("--no-isolate", action="store_true", help="measure in this process (peaks then mix; for debugging)")
    return p


def apply_omp_wait_policy(policy: str, isolate: bool) -> Optional[str]:
    """Set OMP_WAIT_POLICY for the measuring processes; returns the value they run with.

    GNU OpenMP reads it once, when torch is imported, so it is set here, before the fork
    server (which imports torch for every child) starts. Why ``passive`` by default: with
    the default (spinning) policy, torch's two OpenMP threads on a 2-core machine shared with
    other jobs waste their time slices spinning at barriers; a Hiera-T training step measured
    1.3x (load 8) to 4x (load 6) slower than with ``passive`` (bench/results/investigation.md),
    which would make the tables a measurement of the neighbours rather than of the model.
    """
    if policy != "inherit":
        os.environ["OMP_WAIT_POLICY"] = policy.upper()
        if not isolate:
            print("note: --no-isolate measures in this process, whose OpenMP already started: "
                  "--omp-wait-policy has no effect here (set OMP_WAIT_POLICY in the environment)", file=sys.stderr)
    return os.environ.get("OMP_WAIT_POLICY")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.omp_wait_policy_effective = apply_omp_wait_policy(args.omp_wait_policy, not args.no_isolate)
    global _REUSE_MEMORY
    _REUSE_MEMORY = args.malloc == "reuse"
    if _REUSE_MEMORY and args.no_isolate:
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.compare:
        run_compare(args)
    elif args.placements:
        run_placements(args)
    elif args.volume:
        run_volume(args)
    elif args.amp_check:
        run_amp_check(args)
    else:
        run_grid(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
