"""``infer.py``: segment volumes or X-ray images with a trained checkpoint.

Inputs are read through the format registry (:mod:`s2unet.io.formats`): NIfTI, MetaImage/NRRD,
a folder holding one DICOM series, and 2D pictures (PNG/JPEG/TIFF/BMP/DICOM). A model trained on
volumes also segments 2D CT slice pictures: each is read with its own intensities and predicted
as a one-slice volume (``Predictor.predict_slice``), so the checkpoint's windowing applies; its
outputs are PNGs like an image model's, and its reference masks are 2D files.

Everything is validated before the first slice is predicted: the checkpoint(s) load, every input
decodes and suits the model (volumes for a volume model, images for an image model), every
ground-truth and lung file exists and matches its input's geometry, and the output folder holds
no earlier results (unless ``overwrite``). All problems are reported together, each naming its
file.

Outputs in ``output_dir`` (every file written under a temporary name, then renamed):

- ``<case>_pred.nii.gz``: uint8 labels with the input's exact shape, affine, zooms and
  q/sform codes (binary 0/1; multiclass 0..K-1); multilabel: ``<case>_pred_<label>.nii.gz``,
  one 0/1 volume per label. A DICOM series gives NIfTI with the series geometry, MHA/NRRD
  inputs ``.mha`` / ``.nrrd`` with theirs. For 2D pictures ``<case>_pred.png`` (0/255; multiclass: class index),
  ``<case>_pred_<label>.png`` per label for multilabel.
- ``<case>_prob.nii.gz`` / ``<case>_prob_<channel>.nii.gz`` (float32) or ``.png`` (0..255)
  with ``probabilities``.
- ``<case>_seg.dcm`` for a DICOM input (a series folder or a 2D DICOM file): a binary DICOM
  Segmentation (:mod:`s2unet.io.dicom_seg`) referencing the source images, one segment per
  foreground label (named, coloured as in the overlay), identifying s2unet, its version and the
  checkpoint; it holds the masks of ``<case>_pred*`` after post-processing.
- ``<case>_overlay.png``, ``<case>_report.json`` and ``reports.csv`` (all cases).
- with ``gt``: ``metrics_per_case.csv``, ``metrics_per_slice.csv`` (volumes).
- text-prompted checkpoints: one output per phrase (``text``), named after the phrase
  (``--text "left clavicle"`` -> ``<case>_pred_left_clavicle.png``); without ``text`` every
  structure the model knows, named after its label. A phrase too far from every trained
  structure is refused, listing the known ones (:meth:`s2unet.text.PhraseBank.resolve`).
- ``summary.json``: settings, timing and, with ``gt``, the metric aggregates of
  :func:`s2unet.metrics.summarize`. ``slices_per_second`` is the main model's throughput
  (preprocessing + forward + resize back, per second of prediction time; the lung model,
  metrics and file writing are not counted); ``seconds_total`` is the wall time of the run;
  ``threshold_warnings`` lists the cases (and the 2D pictures together) whose threshold leaves
  most slices empty where 0.5 would not (:mod:`.threshold_check`; also printed, and in the
  case's report as ``threshold_warning``).
  ``fingerprint_check``: each case compared with the checkpoint's dataset fingerprint, the
  warnings and the harmonisation (:mod:`.shift`; the case reports carry ``shift_*`` entries).

With ``overwrite`` the files of this run replace earlier ones of the same name, and the run-wide
files of an earlier run (``summary.json``, ``reports.csv``, ``metrics_*.csv``) are removed first;
other files in the folder are left alone. A run that stops part-way (full disk, read-only folder,
a crash, Ctrl-C) removes every file it would have written, so no partial set of results remains.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import __version__
from ..config import Config, ConfigError, DataConfig, check_range
from ..data import CaseImage, DataError, count_nonfinite, read_case, volume_value_range, window_to_unit
from ..devices import resolve_device
from ..io import all_or_none, check_writable, exclusive_lock
from ..io.case import CaseFormat
from ..io.dicom_seg import Algorithm, write_dicom_seg
from ..io.pictures import is_dicom_file
from ..io.discovery import discover_cases
from ..io.formats import describe_inputs, find_format, input_kinds
from ..metrics import DEFAULT_NSD_TOLERANCE, case_metrics, format_summary, summarize
from ..models.checkpoint import LoadedModel, load_model_checkpoint
from ..models.onnx_model import load_onnx_model
from ..predict import Predictor, channel_names, foreground_names, load_masks
from ..predict.precision import PRECISIONS
from .evaluate import ReferenceIndex, check_reference_geometry, write_metric_tables
from .outputs import earlier_results, write_csv, write_json
from .overlay import PRED_COLORS, image_overlay, volume_overlay
from .report import case_report
from .segment import case_probabilities, check_flip_symmetric, label_arrays, make_predictor, output_config
from .shift import ShiftCheck
from .threshold_check import empty_slices_warning, slice_peaks, threshold_line

PathLike = Union[str, Path]
SUMMARY_FILES = ("summary.json", "reports.csv")
METRIC_FILES = ("metrics_per_case.csv", "metrics_per_slice.csv")
OUTPUT_LOCK = ".lock"  # held while a run writes into the output folder


@dataclass
class _Job:
    """One case to segment (a file or a DICOM series folder), with its reference and lung files."""

    case: str
    path: Path
    format: CaseFormat
    gt: Optional[list[Path]] = None
    lung: Optional[list[Path]] = None

    @property
    def suffix(self) -> str:
        """Suffix of the prediction files (the input format's writer)."""
        return self.format.output_suffix_for(self.path)

    @property
    def dicom(self) -> bool:
        """True for a DICOM series folder or a 2D DICOM file (it gets a DICOM-SEG)."""
        return self.path.is_dir() or is_dicom_file(self.path)


def _as_paths(inputs: Union[PathLike, Sequence[PathLike]]) -> list[Path]:
    """One path or a list of them, as a list."""
    return [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(i) for i in inputs]


def _discover(inputs: list[Path], kind: str, problems: list[str]) -> list[_Job]:
    """The inputs (files, series folders or folders of those) that suit a ``kind`` model."""
    found: dict[str, _Job] = {}
    for item in inputs:
        before = len(problems)
        cases = discover_cases(item, input_kinds(kind), problems=problems)
        if not cases and len(problems) == before:  # nothing there, not a misnamed case
            if item.is_dir():
                hint = " (it holds volumes)" if any(find_format(p) for p in item.iterdir()) else ""
                problems.append(f"{item} holds no {describe_inputs(kind)}, which this checkpoint segments{hint}")
            else:
                problems.append(f"{item} is not one of the {describe_inputs(kind)} this checkpoint segments")
        for case in cases:
            if case.case_id in found:
                problems.append(f"{found[case.case_id].path} and {case.path} have the same case id {case.case_id!r}")
            found[case.case_id] = _Job(case.case_id, case.path, case.format)
    return [found[c] for c in sorted(found)]


def _output_names(case: str, cfg: Config, probabilities: bool, ext: str, dicom: bool) -> list[str]:
    """The per-case files a run writes (see the module docstring); ``ext`` from the input's format,
    ``dicom`` for a DICOM input (the DICOM-SEG comes last)."""
    fg, channels = foreground_names(cfg), channel_names(cfg)
    names = [f"{case}_pred_{n}{ext}" for n in fg] if cfg.data.task == "multilabel" else [f"{case}_pred{ext}"]
    if probabilities:
        names += [f"{case}_prob{ext}"] if len(channels) == 1 else [f"{case}_prob_{n}{ext}" for n in channels]
    return names + [f"{case}_overlay.png", f"{case}_report.json"] + ([f"{case}_seg.dcm"] if dicom else [])


def _planned_names(jobs: Sequence[_Job], cfg: Config, probabilities: bool, with_gt: bool) -> list[str]:
    """Every file a run writes: per case, then the run-wide tables and summary."""
    names = [n for job in jobs for n in _output_names(job.case, cfg, probabilities, job.suffix, job.dicom)]
    return names + [*SUMMARY_FILES, *(METRIC_FILES if with_gt else ())]


def _reference_index(
    what: str, root: Optional[PathLike], labels: Optional[list[str]], n_jobs: int, problems: list[str]
) -> Optional[ReferenceIndex]:
    """A ReferenceIndex for ``root`` (None when not given or unusable, with the reason in ``problems``)."""
    if root is None:
        return None
    try:
        index = ReferenceIndex(root, labels)
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
    jobs = _discover(_as_paths(inputs), kind, problems)
    if not jobs and not problems:
        problems.append(f"no inputs given in {inputs}")
    gt_labels = foreground_names(cfg) if cfg.data.task == "multilabel" else None
    references = [
        ("gt", _reference_index("ground truth", gt, gt_labels, len(jobs), problems), cfg.data),
        ("lung", _reference_index("lung mask", lung, None, len(jobs), problems),
         dataclasses.replace(cfg.data, task="binary")),
    ]
    for job in jobs:
        like: Optional[CaseImage] = None
        try:
            # Decoding now (and dropping the result) finds truncated files and NaN/inf values
            # (refused by the training data check too) before hours of work.
            like = read_case(job.path, kind, cfg.data.served)
            bad = count_nonfinite(like.get_array())
            if bad:
                problems.append(f"{job.path}: {bad} NaN/inf values; the model cannot segment them")
        except DataError as exc:
            problems.append(str(exc))
            like = None
        for attr, index, data_cfg in references:
            if index is None:
                continue
            try:  # a 2D picture's references are 2D files, a volume's volumes
                paths = index.paths(job.case, job.format.kind)
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
        shift: ShiftCheck,
        algorithm: Algorithm,
    ) -> None:
        self.cfg = cfg
        self.algorithm = algorithm
        self.predictor = predictor
        self.lung_predictor = lung_predictor
        self.out = output_dir
        self.min_size = min_size
        self.probabilities = probabilities
        self.surface = surface
        self.nsd_tolerance = nsd_tolerance
        self.progress = progress
        self.shift = shift
        self.labels = foreground_names(cfg)
        self.seconds_predict = 0.0
        self.slices = 0
        self.reports: list[dict[str, Any]] = []
        self.case_rows: list[dict[str, Any]] = []
        self.slice_rows: list[dict[str, Any]] = []
        self.warnings: list[dict[str, Any]] = []
        self.picture_peaks: list[float] = []

    def _lung(self, job: _Job, case: CaseImage) -> Optional[np.ndarray]:
        """The case's lung mask (served orientation of the main model; (H, W) for a picture), or None."""
        if job.lung is not None:
            return load_masks(job.lung, dataclasses.replace(self.cfg.data, task="binary"))[0]
        if self.lung_predictor is None:
            return None
        lp = self.lung_predictor
        names = foreground_names(lp.cfg)
        if case.planar:
            return _lung_region(lp.binarize(lp.predict_picture(case)), names)
        lung_vol = read_case(job.path, lp.cfg.data.kind, lp.cfg.data.served)
        task = self.progress.add_task(f"{job.case} lungs", total=lung_vol.shape[lp.cfg.data.axis])
        prob = lp.predict_volume(lung_vol, lambda n: self.progress.advance(task, n))
        region = _lung_region(lp.binarize(prob), names)
        # The lung model may serve the volume in another orientation: go through the file's own.
        return case.to_served(lung_vol.to_original(region))

    def _write_outputs(self, job: _Job, fg: np.ndarray, prob: np.ndarray, case: CaseImage) -> None:
        names = _output_names(job.case, self.cfg, self.probabilities, job.suffix, job.dicom)
        task = self.cfg.data.task
        arrays: list[tuple[np.ndarray, Any]] = [(p, np.uint8) for p in label_arrays(fg, task)]
        if self.probabilities:
            arrays += [(p, np.float32) for p in prob]
        for name, (array, dtype) in zip(names, arrays):
            case.write_like(array, self.out / name, dtype, binary=task != "multiclass")
        if job.dicom:
            try:
                write_dicom_seg(case, fg, self.labels, PRED_COLORS, self.algorithm, self.out / names[-1])
            except DataError as exc:  # the NIfTI/PNG prediction stands; say loudly why no SEG came with it
                warnings.warn(f"no DICOM-SEG: {exc}", stacklevel=2)

    def read(self, job: _Job) -> tuple[CaseImage, np.ndarray]:
        """Decode one case's input: the case and its served volume, or a picture's (H, W) pixels."""
        case = read_case(job.path, self.cfg.data.kind, self.cfg.data.served)
        return case, case.pixels()

    def run(self, job: _Job, decoded: tuple[CaseImage, np.ndarray]) -> None:
        """Segment one decoded case and write everything it produces."""
        d = self.cfg.data
        case, array = decoded
        predictor, shift = self.shift.prepare(self.predictor, job.case, case, array)
        n = 1 if case.planar else array.shape[d.axis]
        task = None if case.planar else self.progress.add_task(job.case, total=n)
        start = time.perf_counter()
        prob, slice_axis = case_probabilities(predictor, case, array, lambda k: self.progress.advance(task, k))
        self.seconds_predict += time.perf_counter() - start
        self.slices += n
        lung = self._lung(job, case)
        fg = self.predictor.clean(self.predictor.binarize(prob), slice_axis, self.min_size, lung)
        self._write_outputs(job, fg, prob, case)
        gt = load_masks(job.gt, d) if job.gt is not None else None
        overlay_path = self.out / f"{job.case}_overlay.png"
        if not case.planar:  # shown in the orientation convention, whichever the checkpoint reads in
            volume_overlay(overlay_path, case.to_convention(array), case.to_convention(fg),
                           None if gt is None else case.to_convention(gt), d.axis, labels=self.labels, title=job.case)
        else:  # a CT slice is shown through the model's window, like its volumes
            shown = window_to_unit(array, d.window, volume_value_range(array)) if case.values == "stored" else array
            image_overlay(overlay_path, shown, fg, gt, labels=self.labels, title=job.case)
        report = case_report(job.case, fg, self.labels, case.spacing, lung, slice_axis, case.spacing_caveat)
        if self.cfg.data.task != "multiclass":  # an argmax has no threshold to leave slices empty
            peaks = slice_peaks(prob, slice_axis)
            if case.planar:  # checked together at the end, as one stack of slices
                self.picture_peaks.extend(peaks)
            elif (warning := empty_slices_warning(job.case, peaks, self.predictor.threshold)) is not None:
                report["threshold_warning"] = warning["message"]
                self.warnings.append(warning)
        report.update(self.shift.finish(shift, fg, self.progress.console))
        write_json(self.out / f"{job.case}_report.json", report)
        self.reports.append(report)
        if gt is not None:
            row, rows = case_metrics(fg, gt, job.case, self.labels, case.spacing, slice_axis, self.surface,
                                     self.nsd_tolerance)
            self.case_rows.append(row)
            self.slice_rows.extend(rows)


def load_for_inference(checkpoint: PathLike, device: Any) -> LoadedModel:
    """A checkpoint (a file or a zoo model's name) ready to predict: attention LoRA folded in."""
    if Path(checkpoint).suffix.lower() == ".onnx":  # exported: onnxruntime on the CPU, its config inside
        if device.type != "cpu":
            raise DataError(f"{checkpoint}: an ONNX model runs on the CPU here; use --device cpu")
        return load_onnx_model(Path(checkpoint))
    loaded = load_model_checkpoint(checkpoint, device)
    loaded.model.merge_lora()  # fold attention LoRA into the weights: same output, faster
    return loaded


@dataclass(frozen=True)
class InferenceOptions:
    """How :func:`run_inference` runs: what to compare with, post-processing, device and output.

    Attributes:
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
        text: phrases for a text-prompted checkpoint, one output per phrase (default: every
            structure it knows). Not combinable with ``gt`` (the reference of a free phrase
            is not defined; ``bench/text_prompted.py`` scores the configured phrases).
        harmonise_intensity: ``none``, ``histogram`` (map each case's intensity quantiles onto
            the training fingerprint's) or ``clahe`` (:mod:`s2unet.predict.harmonise`).
        harmonise_fov: ``none``, ``body`` or ``lungs``: predict in a window around the body
            (lungs) that gives the training field of view; predictions in the input's frame.
        precision: ``auto`` (bf16 autocast only where it measured at least 1.15x faster with
            agreeing masks for this model on this machine, :mod:`s2unet.predict.precision`),
            ``fp32`` or ``bf16``; the choice and why are printed and recorded in ``summary.json``.
    """

    gt: Optional[PathLike] = None
    lung: Optional[PathLike] = None
    lung_checkpoint: Optional[PathLike] = None
    overwrite: bool = False
    probabilities: bool = False
    tta: bool = False
    min_size: int = 0
    batch_size: int = 8
    device: str = "auto"
    threshold: Optional[float] = None
    surface: bool = True
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE
    show_progress: bool = True
    no_postprocess: bool = False
    keep_largest: Optional[list[int]] = None
    fill_holes: bool = False
    text: Optional[Sequence[str]] = None
    harmonise_intensity: str = "none"
    harmonise_fov: str = "none"
    precision: str = "auto"


def run_inference(
    checkpoint: PathLike,
    inputs: Union[PathLike, Sequence[PathLike]],
    output_dir: PathLike,
    options: Optional[InferenceOptions] = None,
) -> dict[str, Any]:
    """Segment volumes or images and write predictions, overlays, reports and (with GT) metrics.

    Args:
        checkpoint: an s2unet model checkpoint (``best.pt``).
        inputs: a volume (NIfTI, MHA/NRRD, a DICOM series folder), a 2D picture
            (PNG/JPEG/TIFF/DICOM), a folder of those, or a list of those; a model trained on 2D
            images (``data.kind: image``) takes only pictures.
        output_dir: output folder (created).
        options: see :class:`InferenceOptions` (default: its defaults).

    Returns:
        The summary written to ``summary.json``.

    Raises:
        ConfigError: an argument out of range or a device this machine does not have.
        CheckpointError: a checkpoint is missing or not an s2unet checkpoint.
        DataError: any input, reference, lung or output problem (all listed, before any work).
        UnknownPhraseError: a phrase is too far from every structure the model knows.
    """
    o = options or InferenceOptions()
    if o.lung is not None and o.lung_checkpoint is not None:
        raise DataError("give either a lung mask or a lung checkpoint, not both")
    check_range("--min-size", o.min_size, "[0, inf)")
    check_range("--batch-size", o.batch_size, "[1, inf)")
    if o.threshold is not None:  # foreground is prob >= threshold: 0 or 1 gives all or nothing
        check_range("--threshold", o.threshold, "(0, 1)")
    check_range("nsd_tolerance", o.nsd_tolerance, "(0, inf)")
    if o.precision not in PRECISIONS:
        raise ConfigError(f"--precision {o.precision!r}: expected one of {', '.join(PRECISIONS)}")
    if o.no_postprocess and (o.keep_largest is not None or o.fill_holes):
        raise DataError("--no-postprocess skips post-processing; do not combine it with --keep-largest / --fill-holes")
    started = time.perf_counter()
    dev = resolve_device(o.device, "--device")
    loaded = load_for_inference(checkpoint, dev)
    shift = ShiftCheck(loaded.fingerprint, str(checkpoint), o.harmonise_intensity, o.harmonise_fov)
    lung_loaded = load_for_inference(o.lung_checkpoint, dev) if o.lung_checkpoint is not None else None
    # Phrases are checked before any input is read (a refusal lists the known structures).
    cfg, phrases = output_config(loaded, o.keep_largest, o.fill_holes, o.text)
    lung_cfg, lung_phrases = (None, None) if lung_loaded is None else output_config(lung_loaded)
    if phrases is not None and o.gt is not None:
        raise DataError("--gt is not available with a text-prompted checkpoint: the reference of a free phrase is "
                        "not defined (bench/text_prompted.py scores the configured phrases)")
    if o.tta:
        check_flip_symmetric(cfg)
        if lung_cfg is not None:
            check_flip_symmetric(lung_cfg)
    out = Path(output_dir)
    jobs = _validate(cfg, inputs, out, o.gt, o.lung, lung_cfg, o.overwrite, o.probabilities)
    check_writable(out)
    names = _planned_names(jobs, cfg, o.probabilities, o.gt is not None)
    planned = [out / n for n in names]
    # One run at a time per folder: two would overwrite each other's files and summary.json.
    with exclusive_lock(out / OUTPUT_LOCK, f"output folder {out}"):
        if not o.overwrite and (refusal := earlier_results(out, names)):  # another run finished meanwhile
            raise DataError(f"cannot run inference: {refusal}")
        if o.overwrite:  # the run-wide files of an earlier run describe its set of cases, not this one's
            for name in (*SUMMARY_FILES, *METRIC_FILES):
                (out / name).unlink(missing_ok=True)
        # A run that stops half-way (full disk, crash, Ctrl-C) leaves none of its files behind.
        with all_or_none(planned):
            thr = loaded.threshold if o.threshold is None else float(o.threshold)
            predictor = make_predictor(loaded, cfg, phrases, dev, thr, o.batch_size, o.tta,
                                       apply_postprocess=not o.no_postprocess, precision=o.precision)
            lung_predictor = (make_predictor(lung_loaded, lung_cfg, lung_phrases, dev, batch_size=o.batch_size, tta=o.tta,
                                             precision=o.precision)
                              if lung_loaded is not None else None)
            console = Console(stderr=True, quiet=not o.show_progress)
            console.print(threshold_line(loaded, thr))
            if o.text and phrases is not None:  # what each asked phrase is segmented as
                for line in phrases.mapping():
                    console.print(line, markup=False, soft_wrap=True)
            console.print(predictor.precision.reason)
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
            shift.announce(console)
            with Progress(*columns, console=console, disable=not o.show_progress) as progress:
                runner = _Runner(cfg, predictor, lung_predictor, out, o.min_size, o.probabilities, o.surface, o.nsd_tolerance, progress,
                                 shift, Algorithm("s2unet", __version__, str(checkpoint)))
                pictures = sum(job.format.kind == "image" for job in jobs)  # volumes have a bar each
                images_task = progress.add_task("images", total=pictures) if pictures else None
                # Decode the next case on a thread while this one is predicted (zlib and image decoding
                # release the GIL), so the model is not kept waiting for I/O.
                with ThreadPoolExecutor(max_workers=1) as pool:
                    pending = pool.submit(runner.read, jobs[0]) if jobs else None
                    for i, job in enumerate(jobs):
                        decoded = pending.result()
                        if i + 1 < len(jobs):
                            pending = pool.submit(runner.read, jobs[i + 1])
                        runner.run(job, decoded)
                        if images_task is not None and job.format.kind == "image":
                            progress.advance(images_task)

            if runner.picture_peaks:
                pictures_warning = empty_slices_warning(f"{len(runner.picture_peaks)} picture(s)",
                                                        np.array(runner.picture_peaks), thr)
                runner.warnings += [] if pictures_warning is None else [pictures_warning]
            for warning in runner.warnings:
                console.print(warning["message"], style="bold red", markup=False, soft_wrap=True)
            write_csv(out / "reports.csv", runner.reports)
            summary: dict[str, Any] = {
                "checkpoint": str(checkpoint),
                "model": {"arch": cfg.model.arch, "encoder": cfg.model.encoder, "task": cfg.data.task,
                          "labels": foreground_names(cfg), "image_size": cfg.data.image_size},
                "settings": {"threshold": thr, "threshold_flatness": loaded.metrics.get("threshold_flatness"),
                             "calibration": loaded.calibration.to_payload(), "tta": o.tta, "min_size": o.min_size,
                             "postprocess": None if o.no_postprocess else dataclasses.asdict(cfg.postprocess), "batch_size": o.batch_size, "device": str(dev),
                             "precision": predictor.precision.to_payload(),
                             "lung": str(o.lung) if o.lung else None, "lung_checkpoint": str(o.lung_checkpoint) if o.lung_checkpoint else None,
                             "gt": str(o.gt) if o.gt else None,
                             "harmonise": {"intensity": o.harmonise_intensity, "fov": o.harmonise_fov}},
                "cases": [job.case for job in jobs],
                "threshold_warnings": runner.warnings,
                "text": None if phrases is None else [
                    {"phrase": p, "output": n, "structure": s, "similarity": sim, "margin": m}
                    for p, n, s, sim, m in zip(phrases.phrases, foreground_names(cfg), phrases.nearest,
                                               phrases.similarity, phrases.margin)
                ],
                "fingerprint_check": shift.summary(),
                "n_slices": runner.slices,
                "seconds_predict": runner.seconds_predict,
                "seconds_total": time.perf_counter() - started,
                "slices_per_second": runner.slices / runner.seconds_predict if runner.seconds_predict > 0 else 0.0,
            }
            if o.gt is not None:
                write_metric_tables(out, runner.case_rows, runner.slice_rows)
                summary["metrics"] = summarize(runner.case_rows, runner.slice_rows)
                summary["settings"].update(surface=o.surface, nsd_tolerance=o.nsd_tolerance)
                console.print(format_summary(summary["metrics"]), soft_wrap=True)
            write_json(out / "summary.json", summary)
            console.print(f"{len(jobs)} case(s), {runner.slices} slice(s) at {summary['slices_per_second']:.2f}/s -> {out}")
            return summary
