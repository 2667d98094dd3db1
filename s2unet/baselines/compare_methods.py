"""The comparison's methods: trained checkpoints through the inference :class:`Predictor`, and
prompted predictors with a prompt strategy, each predicting a test case plane by plane."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from rich.console import Console

from ..config import Config, DataConfig
from ..data import Case, case_identity
from ..predict import Predictor, channel_names
from ..prompts import Prompts, PromptStrategy, fixed_points_from_mean_mask
from ..weights import CheckpointError
from .compare_config import CompareConfig, MethodConfig
from .compare_data import EvalCase, display, training_masks
from .finetuned_predictor import FineTunedPredictor
from .prompted import run_prompted
from .report import MethodResult
from .sam_predictors import PromptedPredictor, create_predictor

console = Console(stderr=True)


class MethodSkipped(Exception):
    """A method cannot run; the message is the reason shown in the table."""


def _slicing(data: DataConfig, stacks: bool) -> tuple:
    """What must agree between a model's data and the comparison's for its inputs to match;
    the slice axis and orientation only when the comparison's cases are cut into slices."""
    return (data.kind, data.axis, data.served) if stacks else (data.kind,)


class TrainedModels:
    """Trained checkpoints loaded once, and their prediction of the current case.

    Draft-prompted methods reuse the prediction of the same checkpoint as a listed method.

    Args:
        data: the comparison's data config.
        test_cases: the test cases (a model whose checkpoint records one of them among its
            training cases, by content, gets a warning).
        device: where the models run.
        stacks: the test cases are volumes cut into slices (:func:`slice_stacks`), so a model
            must have been trained on the same slice axis and orientation.
    """

    def __init__(self, data: DataConfig, test_cases: list[Case], device: str, stacks: bool) -> None:
        self.data, self.test_cases, self.device, self.stacks = data, test_cases, device, stacks
        self._test_hashes: dict[str, str] | None = None  # sha256 -> test case, hashed at the first checkpoint
        self.models: dict[Path, tuple[Predictor, int]] = {}
        self.notes: list[str] = []
        self._cache: dict[tuple[Path, str], tuple[np.ndarray, float]] = {}

    def load(self, checkpoint: str) -> Path:
        """Load a checkpoint (once) and check it fits the comparison's data.

        Returns:
            The resolved path (the key for :meth:`predict`).

        Raises:
            MethodSkipped: missing or unreadable checkpoint, or labels / slicing that differ.
        """
        from ..models.checkpoint import load_model_checkpoint

        path = Path(checkpoint).expanduser().resolve()
        if path in self.models:
            return path
        if not path.is_file():
            raise MethodSkipped(f"checkpoint {checkpoint} not found (train the model first, or fix the path)")
        try:
            loaded = load_model_checkpoint(path, self.device)
        except CheckpointError as exc:
            raise MethodSkipped(f"checkpoint {checkpoint} cannot be used: {exc}") from None
        loaded.model.merge_lora()
        mcfg = loaded.config
        ours = channel_names(Config(data=self.data))
        theirs = channel_names(mcfg)
        if mcfg.data.task == "multiclass" or theirs != ours:
            raise MethodSkipped(
                f"{checkpoint} predicts {theirs} ({mcfg.data.task}) but the comparison evaluates {ours}"
            )
        theirs_sliced, ours_sliced = _slicing(mcfg.data, self.stacks), _slicing(self.data, self.stacks)
        if theirs_sliced != ours_sliced:
            raise MethodSkipped(f"{checkpoint} was trained on data sliced as {theirs_sliced} (kind, axis, "
                                f"orientation), the comparison uses {ours_sliced}")
        self._check_overlap(checkpoint, loaded.trained_cases)
        predictor = Predictor(loaded.model, mcfg, self.device, loaded.threshold, text=loaded.structure_text,
                              calibration=loaded.calibration)
        self.models[path] = (predictor, int(loaded.model.parameter_counts()["trainable"]))
        return path

    def _check_overlap(self, checkpoint: str, trained: list[dict[str, str]] | None) -> None:
        """Note a checkpoint that trained on test cases, by the identities it stores (case names
        alone would match another folder's cases, and a split recomputed here would be this
        data's split, not the one it trained on)."""
        if trained is None:
            self.notes.append(f"WARNING: {checkpoint} does not record the cases it trained on (written by an older "
                              "s2unet): whether it trained on test cases cannot be checked.")
            return
        if self._test_hashes is None:
            self._test_hashes = {(i := case_identity(c))["sha256"]: i["case"] for c in self.test_cases}
        leaked = sorted({self._test_hashes[t["sha256"]] for t in trained if t["sha256"] in self._test_hashes})
        if leaked:
            shown = ", ".join(leaked[:5]) + ("..." if len(leaked) > 5 else "")
            self.notes.append(f"WARNING: {checkpoint} was trained on {len(leaked)} of the test cases ({shown}): "
                              "its scores are optimistic.")

    def trainable(self, path: Path) -> int:
        return self.models[path][1]

    def predict(self, path: Path, ev: EvalCase) -> tuple[np.ndarray, float]:
        """(C, S, H, W) bool prediction of a case and the seconds it took (cached per case)."""
        key = (path, ev.case.case_id)
        if key not in self._cache:
            predictor = self.models[path][0]
            t0 = time.perf_counter()
            if ev.is_volume:
                prob = predictor.predict_planes(ev.volume, ev.planes, ev.value_range())
            else:
                prob = predictor.predict_image(ev.gray)[:, None]
            pred = predictor.binarize(prob)
            self._cache = {k: v for k, v in self._cache.items() if k[1] == ev.case.case_id}
            self._cache[key] = (pred, time.perf_counter() - t0)
        return self._cache[key]


class CaseMethod:
    """How a method predicts a case, in three steps so that every method sees plane ``s``
    before any sees plane ``s + 1``: prompted methods sharing a predictor then embed each plane
    once (the predictor caches only the image it embedded last)."""

    def start(self, ev: EvalCase) -> None:
        """Begin a case."""

    def plane(self, s: int) -> None:
        """Predict plane ``s`` of the current case."""

    def finish(self) -> np.ndarray:
        """The (C, S, H, W) bool prediction of the current case."""
        raise NotImplementedError


@dataclass
class MethodRun:
    """A method being evaluated: its outcome so far and accumulated rows.

    Its ``method`` adds its own wall time to ``seconds``.
    """

    cfg: MethodConfig
    result: MethodResult
    strategy: Optional[PromptStrategy] = None  # prompted methods
    method: Optional[CaseMethod] = None
    case_rows: list[dict[str, Any]] = field(default_factory=list)
    slice_rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    n_images: int = 0
    round_dice: list[list[float]] = field(default_factory=list)


@dataclass
class TrainedMethod(CaseMethod):
    """A trained checkpoint: the whole case at once, through the inference Predictor."""

    run: MethodRun
    models: TrainedModels
    path: Path
    _pred: Optional[np.ndarray] = None

    def start(self, ev: EvalCase) -> None:
        self._pred, seconds = self.models.predict(self.path, ev)
        self.run.seconds += seconds

    def finish(self) -> np.ndarray:
        assert self._pred is not None
        return self._pred


@dataclass
class PromptedMethod(CaseMethod):
    """A prompted predictor with one strategy, run plane by plane, per label channel.

    Attributes:
        run: the bookkeeping it adds its time and iterative curves to.
        predictor: the (shared) predictor; its embedding cache keys are ``(case, slice)``.
        data: the comparison's data config (prompted models see its preprocessing).
        rng: jitter random generator.
        strategy: the prompt strategy.
        fixed: strategies that need training masks: per channel, the points and the (H, W)
            frame they are in.
        draft: strategies that need a draft: the trained models and the draft checkpoint's key.
    """

    run: MethodRun
    predictor: PromptedPredictor
    data: DataConfig
    strategy: PromptStrategy
    rng: np.random.Generator
    fixed: Optional[list[tuple[Prompts, tuple[int, int]]]] = None
    draft: Optional[tuple[TrainedModels, Path]] = None
    _ev: Optional[EvalCase] = None
    _inputs: Optional[np.ndarray] = None
    _reference: Optional[np.ndarray] = None
    _pred: Optional[np.ndarray] = None

    def start(self, ev: EvalCase) -> None:
        self._ev, self._reference = ev, ev.gt
        if self.draft is not None:
            models, path = self.draft
            self._reference, seconds = models.predict(path, ev)
            self.run.seconds += seconds  # the draft model is part of this method's cost
        self._inputs = ev.inputs(self.data)
        self._pred = np.zeros_like(ev.gt)

    def plane(self, s: int) -> None:
        ev = self._ev
        assert ev is not None and self._inputs is not None and self._reference is not None and self._pred is not None
        image = display(self._inputs[s].transpose(1, 2, 0), ev.is_volume)
        embed_seconds = 0.0
        for c in range(ev.gt.shape[0]):
            ref = display(self._reference[c, s], ev.is_volume)
            fixed = None
            if self.fixed is not None:
                prompts, frame = self.fixed[c]
                fixed = prompts.rescaled(frame, ref.shape)
            out = run_prompted(self.predictor, image, ref, self.strategy, self.rng, fixed,
                               image_key=(ev.case.case_id, ev.planes[s]))
            self._pred[c, s] = display(out.prob >= 0.5, ev.is_volume)
            self.run.seconds += out.seconds
            embed_seconds = max(embed_seconds, out.embed_seconds)
            if out.round_dice and ref.any():
                self.run.round_dice.append(out.round_dice)
        self.run.seconds += embed_seconds  # one embedding per plane, whatever the channels

    def finish(self) -> np.ndarray:
        assert self._pred is not None
        pred, self._pred, self._inputs, self._reference = self._pred, None, None, None
        return pred


def _kind(m: MethodConfig) -> str:
    """``trained`` (a checkpoint), ``fine-tuned`` (a prompted model trained here) or ``zero-shot``."""
    if m.predictor is None:
        return "trained"
    return "fine-tuned" if m.predictor == FineTunedPredictor.name else "zero-shot"


def _describe(m: MethodConfig, strategy: Optional[PromptStrategy]) -> str:
    if strategy is None:
        return f"trained checkpoint {m.checkpoint}"
    model = f"fine-tuned {m.weights}" if _kind(m) == "fine-tuned" else f"{m.predictor} zero-shot"
    return f"{model}, {m.prompt}{strategy.describe()}"


class MethodBuilder:
    """Builds each method once: shared predictors and trained models, fixed points."""

    def __init__(self, cfg: CompareConfig, train_cases: list[Case], models: TrainedModels) -> None:
        self.cfg, self.train_cases, self.models = cfg, train_cases, models
        self.predictors: dict[tuple[str, Optional[str]], PromptedPredictor | MethodSkipped] = {}
        self._train_masks: Optional[np.ndarray] = None

    def predictor(self, name: str, weights: Optional[str]) -> PromptedPredictor:
        key = (name, weights)
        if key not in self.predictors:
            try:
                self.predictors[key] = create_predictor(name, weights, self.cfg.device)
            except CheckpointError as exc:  # CheckpointNotFoundError included
                self.predictors[key] = MethodSkipped(f"predictor {name}: {exc}")
        found = self.predictors[key]
        if isinstance(found, MethodSkipped):
            raise found
        return found

    def fixed_points(self, n_points: int) -> list[tuple[Prompts, tuple[int, int]]]:
        if self._train_masks is None:
            if not self.train_cases:
                raise MethodSkipped("points_fixed_mean needs training cases, and the split has none")
            self._train_masks = training_masks(self.train_cases, self.cfg.data, self.cfg.max_train_masks)
        masks = self._train_masks
        frame = tuple(masks.shape[-2:])
        try:
            return [(fixed_points_from_mean_mask(masks[:, c], n_points), frame) for c in range(masks.shape[1])]
        except ValueError as exc:
            raise MethodSkipped(f"points_fixed_mean: {exc}") from None

    def build(self, index: int, m: MethodConfig) -> MethodRun:
        strategy = m.strategy(f"methods[{index}]") if m.predictor is not None else None
        oracle = strategy is not None and strategy.uses_ground_truth
        run = MethodRun(m, MethodResult(m.name, _kind(m), oracle, description=_describe(m, strategy)), strategy)
        try:
            if strategy is None:
                path = self.models.load(m.checkpoint)
                run.result.trainable_parameters = self.models.trainable(path)
                run.method = TrainedMethod(run, self.models, path)
            else:
                draft = (self.models, self.models.load(strategy.params.draft)) if strategy.needs_draft else None
                fixed = self.fixed_points(strategy.params.n_points) if strategy.needs_training_masks else None
                rng = np.random.default_rng([self.cfg.seed, index])
                predictor = self.predictor(m.predictor, m.weights)
                run.result.trainable_parameters = predictor.trainable_parameters
                run.method = PromptedMethod(run, predictor, self.cfg.data, strategy, rng, fixed, draft)
        except MethodSkipped as exc:
            run.result.status, run.result.reason = "skipped", str(exc)
            console.print(f"[yellow]skipped[/] {m.name}: {exc}")
        return run
