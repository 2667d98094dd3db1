"""``python -m s2unet compare``: s2unet, CNN baselines and prompted SAM-family models on the
same test cases, scored by the one metric implementation (:mod:`s2unet.metrics`).

A comparison YAML::

    name: covid_ct_compare
    output_dir: runs/compare_covid_ct      # default runs/<name>
    seed: 0
    data: {...}                            # the s2unet ``data:`` section (kind, root, labels,
                                           # window, split...); test cases = split "test",
                                           # else "val"
    max_cases: 4                           # 0 = all test cases
    max_slices_per_case: 24                # volumes: a contiguous block from the middle; 0 = all
    methods:
      - {name: s2unet, checkpoint: runs/covid_ct/best.pt}
      - {name: litemedsam-box, predictor: litemedsam, prompt: box_per_component, jitter: 0.0}
      - {name: litemedsam-draft, predictor: litemedsam, prompt: draft_boxes, draft: runs/covid_ct/best.pt}
      - {name: mobilesam-iter, predictor: mobilesam, prompt: iterative, rounds: 5}

Trained checkpoints run through :class:`s2unet.inference.Predictor` with their own
preprocessing (window, 2.5D context, image size) and tuned threshold. Prompted models see each
image (or CT slice, shown the usual way up: the served slice transposed) at its native
resolution, prompted per label channel. A method that cannot start (missing checkpoint, labels
that do not match) is reported as skipped with the reason; one that raises while running as
failed; the others still run.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from ..config import Config, ConfigError, DataConfig, load_layered, read_values, validate
from ..data import (
    Case,
    DataError,
    find_cases,
    load_nifti,
    prepare_image,
    prepare_slice,
    read_image,
    split_cases,
    volume_value_range,
)
from ..inference.predictor import Predictor, channel_names, load_masks
from ..metrics import case_metrics, summarize
from ..weights import CheckpointError
from .prompted import STRATEGIES, run_prompted, uses_ground_truth
from .prompts import Prompts, fixed_points_from_mean_mask
from .report import MethodResult, iterative_summary, write_comparison
from .sam_predictors import PromptedPredictor, create_predictor, predictor_names

console = Console(stderr=True)


# ---------------------------------------------------------------------------------- config
@dataclass
class MethodConfig:
    """One compared method: a trained ``checkpoint``, or a zero-shot ``predictor`` + ``prompt``.

    Attributes:
        name: the name in the tables (unique).
        checkpoint: an s2unet/CNN model checkpoint (``best.pt``) trained by this project.
        predictor: a prompted predictor name (``litemedsam``, ``mobilesam``, ``sam2.1_hiera_tiny``...).
        weights: the predictor's checkpoint file instead of its default one.
        prompt: the prompting strategy (see :mod:`s2unet.baselines.prompted`).
        jitter: box strategies: random shift of each side, in box-side units.
        rounds: ``iterative``: corrective clicks after the first click.
        draft: ``draft_boxes``: the checkpoint whose prediction is the draft.
        n_points: ``points_fixed_mean``: points per image.
    """

    name: str = ""
    checkpoint: Optional[str] = None
    predictor: Optional[str] = None
    weights: Optional[str] = None
    prompt: str = "box_per_component"
    jitter: float = 0.0
    rounds: int = 5
    draft: Optional[str] = None
    n_points: int = 2


@dataclass
class CompareConfig:
    """A comparison run (see the module docstring).

    Attributes:
        name: title and default output folder name.
        output_dir: where the outputs go (default ``runs/<name>``).
        seed: split seed (must equal the training runs' seed for a fair test set) and jitter seed.
        data: the data section, as in a training config.
        max_cases: test cases evaluated (the first ones by id); 0 = all.
        max_slices_per_case: volumes: slices per case, a contiguous block from the middle (so
            3D metrics keep their geometry); 0 = all.
        max_train_masks: ``points_fixed_mean``: training masks (images or slices) averaged.
        surface: also HD95 / NSD (slower).
        device: torch device.
        methods: the methods, in table order.
    """

    name: str = "compare"
    output_dir: str = ""
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    max_cases: int = 0
    max_slices_per_case: int = 0
    max_train_masks: int = 200
    surface: bool = True
    device: str = "cpu"
    methods: list[MethodConfig] = field(default_factory=list)


def _check_compare_config(cfg: CompareConfig) -> CompareConfig:
    """Cross-field checks; raise ConfigError naming the method and key."""
    validate(Config(data=cfg.data))
    if cfg.data.task == "multiclass":
        raise ConfigError("compare: data.task multiclass is not supported (prompted models segment binary masks)")
    if not cfg.methods:
        raise ConfigError("compare: the config lists no methods")
    names = [m.name for m in cfg.methods]
    for i, m in enumerate(cfg.methods):
        where = f"methods[{i}] ({m.name or 'no name'})"
        if not m.name:
            raise ConfigError(f"{where}: every method needs a name")
        if names.count(m.name) > 1:
            raise ConfigError(f"{where}: the name {m.name!r} is used twice")
        if (m.checkpoint is None) == (m.predictor is None):
            raise ConfigError(f"{where}: give either checkpoint (a trained model) or predictor (zero-shot)")
        if m.predictor is not None:
            if m.predictor not in predictor_names():
                raise ConfigError(f"{where}: unknown predictor {m.predictor!r}; known: {', '.join(predictor_names())}")
            if m.prompt not in STRATEGIES:
                raise ConfigError(f"{where}: unknown prompt {m.prompt!r}; known: {', '.join(STRATEGIES)}")
            if (m.prompt == "draft_boxes") != (m.draft is not None):
                raise ConfigError(f"{where}: prompt draft_boxes and the draft checkpoint go together")
        if m.jitter < 0 or m.rounds < 0 or m.n_points < 1:
            raise ConfigError(f"{where}: jitter and rounds must be >= 0, n_points >= 1")
    if cfg.max_cases < 0 or cfg.max_slices_per_case < 0 or cfg.max_train_masks < 1:
        raise ConfigError("compare: max_cases and max_slices_per_case must be >= 0, max_train_masks >= 1")
    return cfg


def load_compare_config(path: str | Path, overrides: Optional[list[str]] = None) -> CompareConfig:
    """Read a comparison YAML, apply ``key=value`` overrides and validate.

    Args:
        path: the YAML file; ``name`` defaults to its stem.
        overrides: e.g. ``["max_cases=5", "data.root=../shared/data/cxr_jsrt_scr"]``.

    Returns:
        The validated CompareConfig.

    Raises:
        ConfigError: unreadable file, unknown keys, wrong types or inconsistent methods.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"comparison config {path} does not exist")
    values = read_values(path)
    values.setdefault("name", path.stem)
    return load_layered(CompareConfig, values, path, overrides, _check_compare_config)


# ------------------------------------------------------------------------------------ data
@dataclass
class EvalCase:
    """One test case as a stack of 2D planes (S = 1 for an image).

    Attributes:
        case: the dataset case.
        gt: (C, S, H, W) bool reference of the evaluated planes.
        planes: slice indices along the data axis (``[0]`` for images).
        spacing: volumes: voxel size of the (S, H, W) stack; None for images.
        volume: volumes: the served, decoded image array.
        gray: images: the (H, W) image in 0..1 as read (NaN handled by ``prepare_image``).
    """

    case: Case
    gt: np.ndarray
    planes: list[int]
    spacing: Optional[tuple[float, float, float]] = None
    volume: Optional[np.ndarray] = None
    gray: Optional[np.ndarray] = None
    _value_range: Optional[tuple[float, float]] = None

    @property
    def is_volume(self) -> bool:
        return self.volume is not None

    def inputs(self, data: DataConfig) -> np.ndarray:
        """(S, 3, H, W) float32 model inputs in 0..1, prepared as ``data`` prescribes (window,
        2.5D context) at native size."""
        if self.volume is None:
            return prepare_image(self.gray)[None]
        if self._value_range is None:
            self._value_range = volume_value_range(self.volume)
        return np.stack([prepare_slice(self.volume, k, data, self._value_range) for k in self.planes])


def middle_block(n: int, max_planes: int) -> list[int]:
    """A contiguous block of ``max_planes`` slice indices from the middle of ``n`` (all if 0)."""
    if max_planes <= 0 or max_planes >= n:
        return list(range(n))
    start = (n - max_planes) // 2
    return list(range(start, start + max_planes))


def load_eval_case(case: Case, data: DataConfig, max_planes: int) -> EvalCase:
    """Read a test case's image and reference (binary / multilabel channels).

    Args:
        case: the dataset case.
        data: the comparison's data config.
        max_planes: volumes: slices kept (see :func:`middle_block`).

    Returns:
        The EvalCase.
    """
    gt = load_masks(case.labels, data)
    if data.kind != "volume":
        return EvalCase(case, gt[:, None], [0], gray=read_image(case.image))
    vol = load_nifti(case.image, data.reorient)
    axis = data.axis
    planes = middle_block(vol.shape[axis], max_planes)
    stack = np.moveaxis(np.take(gt, planes, axis=axis + 1), axis + 1, 1)
    zooms = vol.zooms
    spacing = (zooms[axis], *[z for a, z in enumerate(zooms) if a != axis])
    return EvalCase(case, stack, planes, spacing=spacing, volume=vol.get_array())


def _display(array: np.ndarray, is_volume: bool) -> np.ndarray:
    """A served CT slice the usual way up (transposed, see the data README); images as read.
    Works on (H, W) masks and (H, W, 3) images; applying it twice restores the input."""
    return np.swapaxes(array, 0, 1) if is_volume else array


def _spread(items: list, limit: int) -> list:
    """Up to ``limit`` items, evenly spread over the list."""
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def training_masks(cases: list[Case], data: DataConfig, limit: int) -> np.ndarray:
    """Up to ``limit`` training masks (images or slices), evenly spread, in display orientation.

    Args:
        cases: the training cases.
        data: the data config.
        limit: most masks returned.

    Returns:
        (M, C, H, W) bool, every mask resized (nearest) to the first one's size.
    """
    is_volume = data.kind == "volume"
    planes: list[np.ndarray] = []  # (C, H, W) each
    for case in cases if is_volume else _spread(cases, limit):
        gt = load_masks(case.labels, data)
        planes += list(np.moveaxis(gt, data.axis + 1, 0)) if is_volume else [gt]
    if not planes:
        raise ValueError("no training cases to average masks over")
    chosen = [np.stack([_display(c, is_volume) for c in p]) for p in _spread(planes, limit)]
    size = chosen[0].shape[-2:]
    return np.stack([p if p.shape[-2:] == size else _resize_masks(p, size) for p in chosen])


def _resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) bool -> (C, *size) bool, nearest neighbour (pixel centres, as the datasets)."""
    t = torch.from_numpy(masks.astype(np.float32))[None]
    return F.interpolate(t, size=tuple(size), mode="nearest-exact")[0].numpy() > 0.5


# --------------------------------------------------------------------------------- methods
class MethodSkipped(Exception):
    """A method cannot run; the message is the reason shown in the table."""


def _slicing(data: DataConfig) -> tuple:
    """What must agree between a model's data and the comparison's for its inputs to match."""
    return (data.kind, data.axis, data.reorient) if data.kind == "volume" else (data.kind,)


class TrainedModels:
    """Trained checkpoints loaded once, and their prediction of the current case.

    Draft-prompted methods reuse the prediction of the same checkpoint as a listed method.
    """

    def __init__(self, data: DataConfig, test_ids: list[str], all_ids: list[str], device: str) -> None:
        self.data, self.test_ids, self.all_ids, self.device = data, test_ids, all_ids, device
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
        from ..engine.checkpoint import load_model_checkpoint

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
        if _slicing(mcfg.data) != _slicing(self.data):
            raise MethodSkipped(f"{checkpoint} was trained on data sliced as {_slicing(mcfg.data)} (kind, axis, "
                                f"reorient), the comparison uses {_slicing(self.data)}")
        try:
            trained_on = split_cases(self.all_ids, mcfg.data.split, mcfg.seed)["train"]
        except DataError as exc:  # its split names cases this data set does not have
            trained_on = []
            self.notes.append(f"NOTE: could not recompute the training split of {checkpoint}: {exc}")
        leaked = sorted(set(trained_on) & set(self.test_ids))
        if leaked:
            shown = ", ".join(leaked[:5]) + ("..." if len(leaked) > 5 else "")
            self.notes.append(f"WARNING: {checkpoint} was trained on {len(leaked)} of the test cases ({shown}): "
                              "its scores are optimistic.")
        predictor = Predictor(loaded.model, mcfg, self.device, loaded.threshold)
        self.models[path] = (predictor, int(loaded.model.parameter_counts()["trainable"]))
        return path

    def trainable(self, path: Path) -> int:
        return self.models[path][1]

    def predict(self, path: Path, ev: EvalCase) -> tuple[np.ndarray, float]:
        """(C, S, H, W) bool prediction of a case and the seconds it took (cached per case)."""
        key = (path, ev.case.case_id)
        if key not in self._cache:
            predictor = self.models[path][0]
            t0 = time.perf_counter()
            inputs = ev.inputs(predictor.cfg.data)
            prob = np.concatenate([predictor.predict_batch(inputs[i : i + predictor.batch_size])
                                   for i in range(0, len(inputs), predictor.batch_size)])
            pred = predictor.binarize(prob.transpose(1, 0, 2, 3))
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
        fixed: ``points_fixed_mean``: per channel, the points and the (H, W) frame they are in.
        draft: ``draft_boxes``: the trained models and the draft checkpoint's key.
    """

    run: MethodRun
    predictor: PromptedPredictor
    data: DataConfig
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
        ev, m = self._ev, self.run.cfg
        assert ev is not None and self._inputs is not None and self._reference is not None and self._pred is not None
        image = _display(self._inputs[s].transpose(1, 2, 0), ev.is_volume)
        embed_seconds = 0.0
        for c in range(ev.gt.shape[0]):
            ref = _display(self._reference[c, s], ev.is_volume)
            fixed = None
            if self.fixed is not None:
                prompts, frame = self.fixed[c]
                fixed = prompts.rescaled(frame, ref.shape)
            out = run_prompted(self.predictor, image, ref, m.prompt, m.rounds, m.jitter, self.rng, fixed,
                               image_key=(ev.case.case_id, ev.planes[s]))
            self._pred[c, s] = _display(out.prob >= 0.5, ev.is_volume)
            self.run.seconds += out.seconds
            embed_seconds = max(embed_seconds, out.embed_seconds)
            if out.round_dice and ref.any():
                self.run.round_dice.append(out.round_dice)
        self.run.seconds += embed_seconds  # one embedding per plane, whatever the channels

    def finish(self) -> np.ndarray:
        assert self._pred is not None
        pred, self._pred, self._inputs, self._reference = self._pred, None, None, None
        return pred


def _describe(m: MethodConfig) -> str:
    if m.checkpoint is not None:
        return f"trained checkpoint {m.checkpoint}"
    extra = {"iterative": f", {m.rounds} corrective clicks", "draft_boxes": f", draft from {m.draft}",
             "points_fixed_mean": f", {m.n_points} points"}.get(m.prompt, "")
    jitter = f", jitter {m.jitter:g}" if m.prompt.startswith("box") and m.jitter else ""
    return f"{m.predictor} zero-shot, {m.prompt}{jitter}{extra}"


class _Setup:
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
        oracle = m.predictor is not None and uses_ground_truth(m.prompt)
        kind = "trained" if m.checkpoint is not None else "zero-shot"
        run = MethodRun(m, MethodResult(m.name, kind, oracle, description=_describe(m)))
        try:
            if m.checkpoint is not None:
                path = self.models.load(m.checkpoint)
                run.result.trainable_parameters = self.models.trainable(path)
                run.method = TrainedMethod(run, self.models, path)
            else:
                draft = (self.models, self.models.load(m.draft)) if m.draft is not None else None
                fixed = self.fixed_points(m.n_points) if m.prompt == "points_fixed_mean" else None
                rng = np.random.default_rng([self.cfg.seed, index])
                run.method = PromptedMethod(run, self.predictor(m.predictor, m.weights), self.cfg.data, rng,
                                            fixed, draft)
        except MethodSkipped as exc:
            run.result.status, run.result.reason = "skipped", str(exc)
            console.print(f"[yellow]skipped[/] {m.name}: {exc}")
        return run


# ------------------------------------------------------------------------------------ main
def _score(run: MethodRun, ev: EvalCase, pred: np.ndarray, labels: list[str], surface: bool) -> None:
    """Add a case's metric rows to a method."""
    cid = ev.case.case_id
    if ev.is_volume:
        row, rows = case_metrics(pred, ev.gt, cid, labels, ev.spacing, slice_axis=0, surface=surface)
        for r in rows:
            r["slice"] = ev.planes[r["slice"]]  # stack position -> slice index in the volume
    else:
        row, rows = case_metrics(pred[:, 0], ev.gt[:, 0], cid, labels, surface=surface)
    run.case_rows.append(row)
    run.slice_rows.extend(rows)


def _guarded(run: MethodRun, case_id: str, step: Callable[[MethodRun], Any]) -> Any:
    """Run one step of a method; a method that raises is marked failed and stops, the others go on."""
    if run.method is None:
        return None
    try:
        return step(run)
    except Exception as exc:  # one broken method must not stop the comparison
        run.result.status, run.result.reason = "failed", f"{type(exc).__name__} on {case_id}: {exc}"
        run.method = None
        console.print(f"[red]failed[/] {run.cfg.name} on {case_id}:\n{traceback.format_exc()}")
        return None


def comparison_cases(cfg: CompareConfig) -> tuple[list[Case], list[Case], list[str]]:
    """The comparison's test cases (split ``test``, else ``val``), training cases and all ids."""
    cases = find_cases(cfg.data)
    ids = [c.case_id for c in cases]
    split = split_cases(ids, cfg.data.split, cfg.seed)
    test_ids = split["test"] or split["val"]
    if cfg.max_cases:
        test_ids = test_ids[: cfg.max_cases]
    by_id = {c.case_id: c for c in cases}
    return [by_id[i] for i in test_ids], [by_id[i] for i in split["train"]], ids


def run_compare(config_path: str | Path, output_dir: Optional[str | Path] = None,
                overrides: Optional[list[str]] = None) -> Path:
    """Run every method of a comparison config on the same test cases and write the outputs.

    Args:
        config_path: the comparison YAML.
        output_dir: where to write (default: the config's ``output_dir``, else ``runs/<name>``).
        overrides: ``key=value`` strings applied to the YAML (e.g. ``max_cases=5``).

    Returns:
        The output folder, holding ``comparison.md``, ``comparison.csv``, ``per_case.csv``,
        ``dice_boxplot.png`` and, when an iterative method ran, ``iterative_curve.json`` /
        ``iterative_curve.png``.

    Raises:
        ConfigError: a wrong config. DataError: unreadable data. Methods that cannot start
        are reported as skipped instead of raising.
    """
    cfg = load_compare_config(config_path, overrides)
    out = Path(output_dir or cfg.output_dir or Path("runs") / cfg.name)
    cases, train_cases, all_ids = comparison_cases(cfg)
    if not cases:
        raise ConfigError(f"{config_path}: the split has no test or validation cases to compare on")
    labels = channel_names(Config(data=cfg.data))
    models = TrainedModels(cfg.data, [c.case_id for c in cases], all_ids, cfg.device)
    setup = _Setup(cfg, train_cases, models)
    runs = [setup.build(i, m) for i, m in enumerate(cfg.methods)]
    console.print(f"[bold]{cfg.name}[/]: {len(cases)} test cases, {sum(r.method is not None for r in runs)} "
                  f"of {len(runs)} methods runnable -> {out}")

    volumes = cfg.data.kind == "volume"
    for ci, case in enumerate(cases, start=1):
        ev = load_eval_case(case, cfg.data, cfg.max_slices_per_case)
        for run in runs:
            _guarded(run, case.case_id, lambda r: r.method.start(ev))
        for s in range(len(ev.planes)):
            for run in runs:
                _guarded(run, case.case_id, lambda r: r.method.plane(s))
        for run in runs:
            pred = _guarded(run, case.case_id, lambda r: r.method.finish())
            if pred is None:
                continue
            run.n_images += len(ev.planes)
            _score(run, ev, pred, labels, cfg.surface)
            console.print(f"[{ci}/{len(cases)}] {case.case_id} {run.cfg.name}: Dice {run.case_rows[-1]['dice']:.3f}")

    per_case: list[dict[str, Any]] = []
    curves: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run.result.status == "ok" and run.case_rows:
            run.result.summary = summarize(run.case_rows, run.slice_rows)
            run.result.seconds_per_image = run.seconds / max(1, run.n_images)
            per_case += [{"method": run.cfg.name, **row} for row in run.case_rows]
            if run.cfg.prompt == "iterative" and run.cfg.predictor is not None:
                curves[run.cfg.name] = iterative_summary(run.round_dice)
    notes = [
        f"Data: {cfg.data.root} ({cfg.data.kind}, labels {', '.join(labels)}); {len(cases)} test cases "
        f"({', '.join(c.case_id for c in cases)})"
        + (f", at most {cfg.max_slices_per_case} middle slices each" if volumes and cfg.max_slices_per_case else "")
        + f"; split seed {cfg.seed}.",
        "Metrics: s2unet.metrics (HD95 in spacing units; empty-mask rules as documented there); "
        "Dice case mean ± population sd.",
        *models.notes,
    ]
    files = write_comparison(out, [r.result for r in runs], per_case, volumes, curves, cfg.name, notes)
    console.print(f"wrote {', '.join(f.name for f in files)} to {out}")
    return out
