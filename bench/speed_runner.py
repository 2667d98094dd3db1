"""The speed benchmark's configurations and runner: build a model, time its training step (the
library's own, :class:`s2unet.engine.step.TrainStep`) and its inference call, each configuration
in a fresh process when asked."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import yaml

from bench.speed_probes import (
    MatmulProbe,
    current_rss_bytes,
    flop_counter,
    median,
    peak_rss_bytes,
    process_peak_rss_bytes,
    ratio,
    reset_peak_rss,
    sync,
)
from s2unet.runtime import keep_freed_memory

PHASES = ("train", "infer")


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
        from s2unet.engine.step import TrainStep
        from s2unet.losses import build_loss
        from s2unet.models import create_model_from_config

        self.case = case
        self.knobs = case.knobs
        self.device = device
        self.cfg = load_config(None, list(case.overrides))
        torch.manual_seed(0)
        t0 = time.perf_counter()
        self.model = create_model_from_config(self.cfg).to(device)
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
        self.trainer_step = TrainStep(self.model, self.loss, self.optimizer, self.params, device, self.amp,
                                      t.grad_clip, t.accumulate)
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
        return self.x_train.shape[0] * self.cfg.train.accumulate if phase == "train" else self.x_infer.shape[0]

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
        """One optimiser step of the trainer's own :class:`~s2unet.engine.step.TrainStep`:
        ``train.accumulate`` micro-batches of forward, loss and backward, then clip and update."""
        for _ in range(self.cfg.train.accumulate):
            self.trainer_step.backward(self.x_train, self.y_train)
        self.trainer_step.update()

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
    from s2unet.models import get_architecture

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
            "arch": runner.cfg.model.arch, "encoder": runner.cfg.model.encoder if get_architecture(runner.cfg.model.arch).encoders == "any" else None,
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
_PRELOAD = ["torch", "yaml", "s2unet.config", "s2unet.models", "s2unet.losses", "s2unet.engine.step", "bench.speed_runner"]
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


_REUSE_MEMORY = True  # --malloc: set by main() (set_reuse_memory) before the first child starts


def set_reuse_memory(reuse: bool) -> None:
    """Whether measuring children keep freed memory for reuse, as train/infer do (``--malloc``)."""
    global _REUSE_MEMORY
    _REUSE_MEMORY = reuse


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
