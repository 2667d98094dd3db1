"""``infer.py``: segment NIfTI volumes or X-ray images with a trained checkpoint.

A model trained on volumes also segments 2D CT slice files (PNG/JPEG/TIFF/DICOM): each is read
with its own intensities and predicted as a one-slice volume (``Predictor.predict_slice``), so
the checkpoint's windowing applies; its outputs are PNGs like an image model's, and its
reference masks are 2D files.

Everything is validated before the first slice is predicted: the checkpoint(s) load, every input
decodes and suits the model (volumes for a volume model, images for an image model), every
ground-truth and lung file exists and matches its input's geometry, and the output folder holds
no earlier results (unless ``overwrite``). All problems are reported together, each naming its
file.

Outputs in ``output_dir`` (every file written under a temporary name, then renamed):

- ``<case>_pred.nii.gz``: uint8 labels with the input's exact shape, affine, zooms and
  q/sform codes (binary 0/1; multiclass 0..K-1); multilabel: ``<case>_pred_<label>.nii.gz``,
  one 0/1 volume per label. For images ``<case>_pred.png`` (0/255; multiclass: class index),
  ``<case>_pred_<label>.png`` per label for multilabel.
- ``<case>_prob.nii.gz`` / ``<case>_prob_<channel>.nii.gz`` (float32) or ``.png`` (0..255)
  with ``probabilities``.
- ``<case>_overlay.png``, ``<case>_report.json`` and ``reports.csv`` (all cases).
- with ``gt``: ``metrics_per_case.csv``, ``metrics_per_slice.csv`` (volumes).
- ``summary.json``: settings, timing and, with ``gt``, the metric aggregates of
  :func:`s2unet.metrics.summarize`. ``slices_per_second`` is the main model's throughput
  (preprocessing + forward + resize back, per second of prediction time; the lung model,
  metrics and file writing are not counted); ``seconds_total`` is the wall time of the run.

With ``overwrite`` the files of this run replace earlier ones of the same name, and the run-wide
files of an earlier run (``summary.json``, ``reports.csv``, ``metrics_*.csv``) are removed first;
other files in the folder are left alone. A run that stops part-way (full disk, read-only folder,
a crash, Ctrl-C) removes every file it would have written, so no partial set of results remains.
"""
from __future__ import annotations

import dataclasses
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..config import Config, DataConfig, check_range
from ..config import validate as validate_config
from ..data import (
    DataError,
    NiftiVolume,
    count_nonfinite,
    load_nifti,
    nifti_stem,
    read_image,
    read_slice_values,
    save_like,
    volume_value_range,
    window_to_unit,
)
from ..data.cases import file_stem, index_folder
from ..engine.checkpoint import LoadedModel, load_model_checkpoint
from ..engine.distributed import resolve_device
from ..io import all_or_none, check_writable
from ..metrics import DEFAULT_NSD_TOLERANCE, case_metrics, format_summary, summarize
from .evaluate import ReferenceIndex, check_reference_geometry, write_metric_tables
from .outputs import earlier_results, write_csv, write_json, write_png
from .overlay import image_overlay, volume_overlay
from .predictor import Predictor, channel_names, foreground_names, load_masks
from .report import case_report

PathLike = Union[str, Path]
SUMMARY_FILES = ("summary.json", "reports.csv")
METRIC_FILES = ("metrics_per_case.csv", "metrics_per_slice.csv")


@dataclass
class _Job:
    """One case to segment, with its optional reference and lung files."""

    case: str
    path: Path
    gt: Optional[list[Path]] = None
    lung: Optional[list[Path]] = None
    slice_file: bool = False  # a 2D CT slice file given to a volume model


def _describe_kind(kind: str) -> str:
    if kind == "volume":
        return "NIfTI volumes (.nii/.nii.gz) or 2D CT slices (PNG/JPEG/TIFF/DICOM)"
    return "2D images (PNG/JPEG/TIFF/DICOM)"


def _as_paths(inputs: Union[PathLike, Sequence[PathLike]]) -> list[Path]:
    """One path or a list of them, as a list."""
    return [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(i) for i in inputs]


def _discover(inputs: list[Path], kind: str, problems: list[str]) -> list[tuple[str, Path]]:
    """Case ids and files of the inputs (files or folders) that suit a ``kind`` model."""
    found: dict[str, Path] = {}
    other = "image" if kind == "volume" else "volume"
    kinds = (kind, "image") if kind == "volume" else (kind,)  # volume models take CT slice files too
    for item in inputs:
        if item.is_dir():
            try:
                files = {}
                for k in kinds:
                    for case, path in index_folder(item, k).items():
                        if case in files:
                            problems.append(f"{files[case]} and {path} have the same case id {case!r}")
                        files[case] = path
            except DataError as exc:
                problems.append(str(exc))
                continue
            if not files:
                hint = " (it holds files of the other kind)" if index_folder(item, other) else ""
                problems.append(f"{item} holds no {_describe_kind(kind)}, which this checkpoint segments{hint}")
        elif item.is_file():
            stem = next((s for s in (file_stem(item, k) for k in kinds) if s is not None), None)
            if stem is None:
                problems.append(f"{item} is not one of the {_describe_kind(kind)} this checkpoint segments")
                continue
            files = {stem: item}
        else:
            problems.append(f"{item} does not exist")
            continue
        for case, path in files.items():
            if case in found:
                problems.append(f"{found[case]} and {path} have the same case id {case!r}")
            found[case] = path
    return sorted(found.items())


def _output_names(case: str, cfg: Config, probabilities: bool, slice_file: bool = False) -> list[str]:
    """The per-case files a run writes (see the module docstring)."""
    ext = ".nii.gz" if cfg.data.kind == "volume" and not slice_file else ".png"
    fg, channels = foreground_names(cfg), channel_names(cfg)
    names = [f"{case}_pred_{n}{ext}" for n in fg] if cfg.data.task == "multilabel" else [f"{case}_pred{ext}"]
    if probabilities:
        names += [f"{case}_prob{ext}"] if len(channels) == 1 else [f"{case}_prob_{n}{ext}" for n in channels]
    return names + [f"{case}_overlay.png", f"{case}_report.json"]


def _planned_names(jobs: Sequence[_Job], cfg: Config, probabilities: bool, with_gt: bool) -> list[str]:
    """Every file a run writes: per case, then the run-wide tables and summary."""
    names = [n for job in jobs for n in _output_names(job.case, cfg, probabilities, job.slice_file)]
    return names + [*SUMMARY_FILES, *(METRIC_FILES if with_gt else ())]


def _reference_index(
    what: str, root: Optional[PathLike], kind: str, labels: Optional[list[str]], n_jobs: int, problems: list[str]
) -> Optional[ReferenceIndex]:
    """A ReferenceIndex for ``root`` (None when not given or unusable, with the reason in ``problems``)."""
    if root is None:
        return None
    try:
        index = ReferenceIndex(root, kind, labels)
    except DataError as exc:
        problems.append(f"{what}: {exc}")
        return None
    if index.is_file and n_jobs > 1:
        problems.append(f"{what} {root} is one file but there are {n_jobs} inputs; give a folder")
        return None
    return index


def _validate(
    cfg: Config,
    inputs: Union[PathLike, Sequence[PathLike]],
    output_dir: Path,
    gt: Optional[PathLike],
    lung: Optional[PathLike],
    lung_cfg: Optional[Config],
    overwrite: bool,
    probabilities: bool,
) -> list[_Job]:
    """Check every file the run needs; raise one DataError listing every problem."""
    kind = cfg.data.kind
    problems: list[str] = []
    if lung_cfg is not None and lung_cfg.data.kind != kind:
        problems.append(f"the lung checkpoint segments {lung_cfg.data.kind}s but the model segments {kind}s")
    jobs = [_Job(case, path, slice_file=kind == "volume" and nifti_stem(path) is None)
            for case, path in _discover(_as_paths(inputs), kind, problems)]
    if not jobs and not problems:
        problems.append(f"no inputs given in {inputs}")
    gt_labels = foreground_names(cfg) if cfg.data.task == "multilabel" else None
    references = [
        ("gt", _reference_index("ground truth", gt, kind, gt_labels, len(jobs), problems), cfg.data),
        ("lung", _reference_index("lung mask", lung, kind, None, len(jobs), problems),
         dataclasses.replace(cfg.data, task="binary")),
    ]
    # A CT slice file's references are 2D files, found and read as an image model's are.
    slice_references = [(attr, None if index is None else ReferenceIndex(index.root, "image", index.labels),
                         dataclasses.replace(data_cfg, kind="image")) for attr, index, data_cfg in references]
    for job in jobs:
        like: Union[NiftiVolume, tuple[int, ...], None] = None
        try:
            # Decoding now (and dropping the result) finds truncated files and NaN/inf values
            # (refused by the training data check too) before hours of work.
            if job.slice_file:
                values = read_slice_values(job.path)
                like, bad = values.shape, count_nonfinite(values)
            elif kind == "volume":
                like = load_nifti(job.path, cfg.data.reorient)
                bad = count_nonfinite(like.get_array())
            else:
                image = read_image(job.path)
                like, bad = image.shape, count_nonfinite(image)
            if bad:
                problems.append(f"{job.path}: {bad} NaN/inf values; the model cannot segment them")
        except DataError as exc:
            problems.append(str(exc))
            like = None
        for attr, index, data_cfg in slice_references if job.slice_file else references:
            if index is None:
                continue
            try:
                paths = index.paths(job.case)
                if like is not None:
                    check_reference_geometry(paths, like, data_cfg)
                load_masks(paths, data_cfg)
            except DataError as exc:
                problems.append(str(exc))
                continue
            setattr(job, attr, paths)
    if any(item.is_dir() and item.resolve() == output_dir.resolve() for item in _as_paths(inputs)):
        problems.append(f"output {output_dir} is also an input folder; its predictions would be read as inputs next time")
    if output_dir.exists() and not output_dir.is_dir():
        problems.append(f"output {output_dir} exists and is not a folder")
    elif not overwrite:
        refusal = earlier_results(output_dir, _planned_names(jobs, cfg, probabilities, gt is not None))
        if refusal:
            problems.append(refusal)
    if problems:
        raise DataError("cannot run inference:\n  " + "\n  ".join(problems))
    return jobs


def _lung_region(masks: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Lungs from a lung model's channels: those named like a lung if any, else all of them."""
    lungs = [i for i, n in enumerate(names) if "lung" in n.lower()] or list(range(len(names)))
    return np.any(masks[lungs], axis=0)


class _Runner:
    """Per-case work of one run: predict, clean, write, report, score."""

    def __init__(
        self,
        cfg: Config,
        predictor: Predictor,
        lung_predictor: Optional[Predictor],
        output_dir: Path,
        min_size: int,
        probabilities: bool,
        surface: bool,
        nsd_tolerance: float,
        progress: Progress,
    ) -> None:
        self.cfg = cfg
        self.predictor = predictor
        self.lung_predictor = lung_predictor
        self.out = output_dir
        self.min_size = min_size
        self.probabilities = probabilities
        self.surface = surface
        self.nsd_tolerance = nsd_tolerance
        self.progress = progress
        self.labels = foreground_names(cfg)
        self.seconds_predict = 0.0
        self.slices = 0
        self.reports: list[dict[str, Any]] = []
        self.case_rows: list[dict[str, Any]] = []
        self.slice_rows: list[dict[str, Any]] = []

    def _timed(self, fn: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
        """Call a predict function, adding its duration to the throughput clock."""
        start = time.perf_counter()
        result = fn(*args)
        self.seconds_predict += time.perf_counter() - start
        return result

    def _data_cfg(self, job: _Job) -> DataConfig:
        """How the job's reference files are read: 2D files for a CT slice file."""
        return dataclasses.replace(self.cfg.data, kind="image") if job.slice_file else self.cfg.data

    def _lung(self, job: _Job, vol: Optional[NiftiVolume], image: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The case's lung mask (served orientation of the main model), or None.

        ``image`` is the 2D input as decoded (``read`` returns it: CT slice values for a slice
        file, which a volume lung model windows itself).
        """
        if job.lung is not None:
            return load_masks(job.lung, dataclasses.replace(self._data_cfg(job), task="binary"))[0]
        if self.lung_predictor is None:
            return None
        lp = self.lung_predictor
        names = foreground_names(lp.cfg)
        if vol is None:
            predict = lp.predict_slice if job.slice_file else lp.predict_image
            return _lung_region(lp.binarize(predict(image)), names)
        lung_vol = load_nifti(job.path, lp.cfg.data.reorient)
        task = self.progress.add_task(f"{job.case} lungs", total=lung_vol.shape[lp.cfg.data.axis])
        prob = lp.predict_volume(lung_vol, lambda n: self.progress.advance(task, n))
        region = _lung_region(lp.binarize(prob), names)
        # The lung model may serve the volume in another orientation: go through the file's own.
        return vol.to_served(lung_vol.to_original(region))

    def _write_outputs(self, case: str, fg: np.ndarray, prob: np.ndarray, vol: Optional[NiftiVolume]) -> None:
        names = _output_names(case, self.cfg, self.probabilities, slice_file=vol is None)
        task = self.cfg.data.task
        if task == "multilabel":
            preds = [m.astype(np.uint8) for m in fg]
        else:  # binary: the one channel; multiclass: exclusive one-hot channels -> class index
            preds = [np.einsum("c...,c->...", fg.astype(np.uint8), np.arange(1, len(fg) + 1, dtype=np.uint8))]
        arrays: list[tuple[np.ndarray, Any]] = [(p, np.uint8) for p in preds]
        if self.probabilities:
            arrays += [(p, np.float32) for p in prob]
        for name, (array, dtype) in zip(names, arrays):
            if vol is not None:
                save_like(array, vol, self.out / name, dtype=dtype)
            elif dtype == np.float32:
                write_png(self.out / name, np.round(array * 255).astype(np.uint8))
            else:
                write_png(self.out / name, array * (255 if task != "multiclass" else 1))

    def read(self, job: _Job) -> tuple[Optional[NiftiVolume], np.ndarray]:
        """Decode one case's input: (volume, its served array) or (None, the 2D image)."""
        if job.slice_file:
            return None, read_slice_values(job.path)
        if self.cfg.data.kind == "volume":
            vol = load_nifti(job.path, self.cfg.data.reorient)
            return vol, vol.get_array()
        return None, read_image(job.path)

    def run(self, job: _Job, decoded: tuple[Optional[NiftiVolume], np.ndarray]) -> None:
        """Segment one decoded case and write everything it produces."""
        d = self.cfg.data
        vol, array = decoded
        image = None if vol is not None else array
        if vol is not None:
            n = array.shape[d.axis]
            task = self.progress.add_task(job.case, total=n)
            prob = self._timed(self.predictor.predict_volume, array, lambda k: self.progress.advance(task, k))
            spacing, slice_axis = vol.zooms, d.axis
        else:
            predict = self.predictor.predict_slice if job.slice_file else self.predictor.predict_image
            prob = self._timed(predict, image)
            n, spacing, slice_axis = 1, None, None
        self.slices += n
        lung = self._lung(job, vol, image)
        fg = self.predictor.clean(self.predictor.binarize(prob), slice_axis, self.min_size, lung)
        self._write_outputs(job.case, fg, prob, vol)
        gt = load_masks(job.gt, self._data_cfg(job)) if job.gt is not None else None
        if job.slice_file:  # the overlay shows the slice through the model's window
            image = window_to_unit(image, d.window, volume_value_range(image))
        overlay_path = self.out / f"{job.case}_overlay.png"
        if vol is not None:
            volume_overlay(overlay_path, array, fg, gt, d.axis, labels=self.labels, title=job.case)
        else:
            image_overlay(overlay_path, image, fg, gt, labels=self.labels, title=job.case)
        report = case_report(job.case, fg, self.labels, spacing, lung, slice_axis)
        write_json(self.out / f"{job.case}_report.json", report)
        self.reports.append(report)
        if gt is not None:
            row, rows = case_metrics(fg, gt, job.case, self.labels, spacing, slice_axis, self.surface, self.nsd_tolerance)
            self.case_rows.append(row)
            self.slice_rows.extend(rows)


def _load(checkpoint: PathLike, device: Any) -> LoadedModel:
    loaded = load_model_checkpoint(checkpoint, device)
    loaded.model.merge_lora()  # fold attention LoRA into the weights: same output, faster
    return loaded


_SIDED = re.compile(r"(?<![a-z])(left|right)(?![a-z])")


def _check_flip_symmetric(cfg: Config) -> None:
    """Refuse flip test-time augmentation for a model with left/right labels.

    A flipped image shows the left structure where the right one was; a model that tells them
    apart by position answers with the wrong label, and flipping back puts it on the wrong side.
    """
    sided = [n for n in channel_names(cfg) if _SIDED.search(n.lower())]
    if sided:
        raise DataError(
            f"--tta averages with a horizontally flipped prediction, which swaps left and right; "
            f"this model has sided labels ({', '.join(sided)}): run it without --tta"
        )


def run_inference(
    checkpoint: PathLike,
    inputs: Union[PathLike, Sequence[PathLike]],
    output_dir: PathLike,
    gt: Optional[PathLike] = None,
    lung: Optional[PathLike] = None,
    lung_checkpoint: Optional[PathLike] = None,
    overwrite: bool = False,
    probabilities: bool = False,
    tta: bool = False,
    min_size: int = 0,
    batch_size: int = 8,
    device: str = "auto",
    threshold: Optional[float] = None,
    surface: bool = True,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
    show_progress: bool = True,
    no_postprocess: bool = False,
    keep_largest: Optional[list[int]] = None,
    fill_holes: bool = False,
) -> dict[str, Any]:
    """Segment volumes or images and write predictions, overlays, reports and (with GT) metrics.

    Args:
        checkpoint: an s2unet model checkpoint (``best.pt``).
        inputs: a NIfTI volume, an image (PNG/JPEG/TIFF/DICOM), a folder of either, or a list
            of those; the checkpoint's ``data.kind`` decides which kind is expected.
        output_dir: output folder (created).
        gt: ground truth: a file (one input) or a folder with ``<case>.<ext>``, or for
            multilabel models one sub-folder per label (``<gt>/<label>/<case>.<ext>``).
        lung: lung masks (file or folder, like ``gt`` for one label): predictions outside are
            removed and the affected lung share is reported.
        lung_checkpoint: alternatively, a lung model whose prediction serves as the lung mask
            (its channels named like ``*lung*``, or all of them).
        overwrite: replace results of an earlier run in ``output_dir``.
        probabilities: also write the probability maps.
        tta: average with the horizontally flipped prediction.
        min_size: drop connected components smaller than this many voxels (3D) / pixels.
        batch_size: slices per forward pass.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        threshold: binarisation threshold; default the one tuned in training (checkpoint).
        surface: with ``gt``, also compute HD95 and NSD.
        nsd_tolerance: NSD tolerance in mm (pixels for images).
        show_progress: draw rich progress bars and print the summary.
        no_postprocess: skip the checkpoint's ``postprocess`` section (largest components, hole
            filling); ``min_size`` and the lung restriction still apply.
        keep_largest: replaces the checkpoint's ``postprocess.keep_largest``.
        fill_holes: fill holes even if the checkpoint does not.

    Returns:
        The summary written to ``summary.json``.

    Raises:
        ConfigError: an argument out of range or a device this machine does not have.
        CheckpointError: a checkpoint is missing or not an s2unet checkpoint.
        DataError: any input, reference, lung or output problem (all listed, before any work).
    """
    if lung is not None and lung_checkpoint is not None:
        raise DataError("give either a lung mask or a lung checkpoint, not both")
    check_range("--min-size", min_size, "[0, inf)")
    check_range("--batch-size", batch_size, "[1, inf)")
    if threshold is not None:  # foreground is prob >= threshold: 0 or 1 gives all or nothing
        check_range("--threshold", threshold, "(0, 1)")
    check_range("nsd_tolerance", nsd_tolerance, "(0, inf)")
    if no_postprocess and (keep_largest is not None or fill_holes):
        raise DataError("--no-postprocess skips post-processing; do not combine it with --keep-largest / --fill-holes")
    started = time.perf_counter()
    dev = resolve_device(device, "--device")
    loaded = _load(checkpoint, dev)
    lung_loaded = _load(lung_checkpoint, dev) if lung_checkpoint is not None else None
    cfg = loaded.config
    if keep_largest is not None or fill_holes:
        post = dataclasses.replace(cfg.postprocess, fill_holes=cfg.postprocess.fill_holes or fill_holes,
                                   keep_largest=cfg.postprocess.keep_largest if keep_largest is None else list(keep_largest))
        cfg = validate_config(dataclasses.replace(cfg, postprocess=post))
    if tta:
        _check_flip_symmetric(cfg)
        if lung_loaded is not None:
            _check_flip_symmetric(lung_loaded.config)
    out = Path(output_dir)
    jobs = _validate(cfg, inputs, out, gt, lung, lung_loaded.config if lung_loaded else None, overwrite, probabilities)
    check_writable(out)
    planned = [out / n for n in _planned_names(jobs, cfg, probabilities, gt is not None)]
    if overwrite:  # the run-wide files of an earlier run describe its set of cases, not this one's
        for name in (*SUMMARY_FILES, *METRIC_FILES):
            (out / name).unlink(missing_ok=True)
    # A run that stops half-way (full disk, crash, Ctrl-C) leaves none of its files behind.
    with all_or_none(planned):
        thr = loaded.threshold if threshold is None else float(threshold)
        predictor = Predictor(loaded.model, cfg, dev, thr, batch_size, tta, apply_postprocess=not no_postprocess)
        lung_predictor = (
            Predictor(lung_loaded.model, lung_loaded.config, dev, lung_loaded.threshold, batch_size, tta)
            if lung_loaded is not None else None
        )
        console = Console(stderr=True, quiet=not show_progress)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, disable=not show_progress) as progress:
            runner = _Runner(cfg, predictor, lung_predictor, out, min_size, probabilities, surface, nsd_tolerance, progress)
            images_task = progress.add_task("images", total=len(jobs)) if cfg.data.kind == "image" else None
            # Decode the next case on a thread while this one is predicted (zlib and image decoding
            # release the GIL), so the model is not kept waiting for I/O.
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(runner.read, jobs[0]) if jobs else None
                for i, job in enumerate(jobs):
                    decoded = pending.result()
                    if i + 1 < len(jobs):
                        pending = pool.submit(runner.read, jobs[i + 1])
                    runner.run(job, decoded)
                    if images_task is not None:
                        progress.advance(images_task)

        write_csv(out / "reports.csv", runner.reports)
        summary: dict[str, Any] = {
            "checkpoint": str(checkpoint),
            "model": {"arch": cfg.model.arch, "encoder": cfg.model.encoder, "task": cfg.data.task,
                      "labels": foreground_names(cfg), "image_size": cfg.data.image_size},
            "settings": {"threshold": thr, "tta": tta, "min_size": min_size,
                         "postprocess": None if no_postprocess else dataclasses.asdict(cfg.postprocess), "batch_size": batch_size, "device": str(dev),
                         "lung": str(lung) if lung else None, "lung_checkpoint": str(lung_checkpoint) if lung_checkpoint else None,
                         "gt": str(gt) if gt else None},
            "cases": [job.case for job in jobs],
            "n_slices": runner.slices,
            "seconds_predict": runner.seconds_predict,
            "seconds_total": time.perf_counter() - started,
            "slices_per_second": runner.slices / runner.seconds_predict if runner.seconds_predict > 0 else 0.0,
        }
        if gt is not None:
            write_metric_tables(out, runner.case_rows, runner.slice_rows)
            summary["metrics"] = summarize(runner.case_rows, runner.slice_rows)
            summary["settings"].update(surface=surface, nsd_tolerance=nsd_tolerance)
            console.print(format_summary(summary["metrics"]), soft_wrap=True)
        write_json(out / "summary.json", summary)
        console.print(f"{len(jobs)} case(s), {runner.slices} slice(s) at {summary['slices_per_second']:.2f}/s -> {out}")
        return summary
