"""Score prediction files against ground truth (``python -m s2unet evaluate --pred DIR --gt DIR``).

Predictions are the files :func:`s2unet.inference.run_inference` writes:
``<case>_pred.nii.gz`` / ``<case>_pred.png`` (one label), or ``<case>_pred_<label>.*`` (one file
per label). Ground truth is found by case id: ``<gt>/<case>.<ext>`` for one label,
``<gt>/<label>/<case>.<ext>`` per label (the layout of the shared SCR masks). Any NIfTI / image
suffix is accepted on either side. Foreground is value > 0 for NIfTI and ``read_mask``'s rule
(more than half the value range; label maps 0/1/2...: value > 0) for images; multiclass label maps are therefore scored as
foreground versus background here.

Volumes are compared in the closest-RAS served orientation with their header spacing and sliced
along served axis 2 (axial for real scans, the slice axis of the shared CT), which is what
``run_inference`` does for models trained with the default ``data.reorient``/``data.axis``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..config import DataConfig
from ..data import DataError, NiftiVolume, check_same_geometry, load_nifti
from ..data.cases import file_stem, index_folder
from ..metrics import DEFAULT_NSD_TOLERANCE, case_metrics, format_summary, summarize
from ..io import all_or_none, check_writable
from .outputs import earlier_results, write_csv, write_json
from .predictor import load_masks

PathLike = Union[str, Path]
PRED_MARK = "_pred"
EVALUATION_PREFIX = "evaluation"
EVALUATION_FILES = ("per_case.csv", "per_slice.csv", "summary.json")  # the summary last


class ReferenceIndex:
    """Finds a case's reference files (ground truth or lung masks) under a file or a folder.

    Args:
        root: a single file (valid for one case only) or a folder.
        kind: ``"volume"`` (NIfTI) or ``"image"``.
        labels: for per-label references, the sub-folder names (one per label); None for one
            file per case.
    """

    def __init__(self, root: PathLike, kind: str, labels: Optional[Sequence[str]] = None) -> None:
        self.root = Path(root)
        self.kind = kind
        self.labels = list(labels) if labels is not None else None
        self._index: dict[Path, dict[str, Path]] = {}
        if not self.root.exists():
            raise DataError(f"{self.root} does not exist")
        if self.root.is_file() and self.labels is not None:
            raise DataError(f"{self.root} is a file; per-label references need a folder with one sub-folder per label")

    def cases(self) -> set[str]:
        """Case ids present (in the first label folder for per-label references)."""
        if self.is_file:
            return set()
        return set(index_folder(self.root / self.labels[0] if self.labels else self.root, self.kind))

    @property
    def is_file(self) -> bool:
        """True when the root is one file (the reference of a single case)."""
        return self.root.is_file()

    def _lookup(self, folder: Path, case: str) -> Path:
        if folder not in self._index:
            self._index[folder] = index_folder(folder, self.kind)
        found = self._index[folder].get(case)
        if found is None:
            kind = "NIfTI volume" if self.kind == "volume" else "image"
            raise DataError(f"no {kind} named {case}.* in {folder}")
        return found

    def paths(self, case: str) -> list[Path]:
        """The case's files, one per label (or one).

        Raises:
            DataError: a file (or label folder) is missing; the message names where it looked.
        """
        if self.is_file:
            return [self.root]
        if self.labels is None:
            return [self._lookup(self.root, case)]
        return [self._lookup(self.root / label, case) for label in self.labels]


def check_reference_geometry(reference: Sequence[Path], like: Union[NiftiVolume, tuple[int, ...]], cfg: DataConfig) -> None:
    """Raise unless every reference file matches the geometry of what it will be compared with.

    Args:
        reference: reference files.
        like: for volumes the image (or prediction) volume, whose shape and affine must match;
            for images the image's (H, W).
        cfg: reading options (see :func:`load_masks`).

    Raises:
        DataError: naming the files and the mismatch, or an unreadable file.
    """
    for path in reference:
        if isinstance(like, NiftiVolume):
            check_same_geometry(like, load_nifti(path, cfg.reorient))
            continue
        shape = load_masks([path], cfg).shape[1:]
        if shape != tuple(like):
            raise DataError(f"{path} has shape {shape} but the image it belongs to has shape {tuple(like)}")


def write_metric_tables(
    output_dir: Path, case_rows: list[dict[str, Any]], slice_rows: list[dict[str, Any]], prefix: str = "metrics"
) -> list[Path]:
    """Write ``<prefix>_per_case.csv`` and, for volumes, ``<prefix>_per_slice.csv`` (atomically).

    Returns:
        The files written.
    """
    written = [output_dir / f"{prefix}_per_case.csv"]
    write_csv(written[0], case_rows)
    if slice_rows:
        written.append(output_dir / f"{prefix}_per_slice.csv")
        write_csv(written[1], slice_rows)
    return written


def _prediction_name(path: Path) -> Optional[tuple[str, str, Optional[str]]]:
    """``(kind, case, label)`` of a prediction file name, or None for other files."""
    for kind in ("volume", "image"):
        stem = file_stem(path, kind)
        if stem is None:
            continue
        case, mark, rest = stem.rpartition(PRED_MARK)
        if not mark or not case or (rest and not rest.startswith("_")):
            return None
        return kind, case, rest[1:] or None
    return None


def find_predictions(pred_dir: PathLike) -> tuple[str, dict[str, dict[Optional[str], Path]]]:
    """Prediction files of a folder, grouped by case.

    Args:
        pred_dir: folder holding ``<case>_pred*`` files.

    Returns:
        ``(kind, {case: {label or None: path}})``.

    Raises:
        DataError: no predictions, NIfTI and image predictions mixed, per-label and single
            files mixed, or cases with different label sets.
    """
    folder = Path(pred_dir)
    if not folder.is_dir():
        raise DataError(f"prediction folder {folder} does not exist")
    kinds: set[str] = set()
    cases: dict[str, dict[Optional[str], Path]] = {}
    for path in sorted(folder.iterdir()):
        parsed = _prediction_name(path) if path.is_file() else None
        if parsed is None:
            continue
        kind, case, label = parsed
        kinds.add(kind)
        if label in cases.setdefault(case, {}):
            raise DataError(f"{cases[case][label]} and {path} are both the prediction of {case}; keep one")
        cases[case][label] = path
    if not cases:
        raise DataError(f"{folder} holds no prediction files (<case>_pred.nii.gz or <case>_pred.png)")
    if len(kinds) > 1:
        raise DataError(f"{folder} mixes NIfTI and image predictions; evaluate them from separate folders")
    label_sets = {tuple(sorted(labels, key=str)) for labels in (set(v) for v in cases.values())}
    if len(label_sets) > 1 or any(None in s and len(s) > 1 for s in label_sets):
        raise DataError(
            f"{folder}: cases have different prediction files ({sorted(map(str, label_sets))}); "
            "every case needs <case>_pred.* or the same set of <case>_pred_<label>.* files"
        )
    return kinds.pop(), cases


def evaluate(
    pred_dir: PathLike,
    gt_dir: PathLike,
    output_dir: Optional[PathLike] = None,
    surface: bool = True,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
    axis: int = 2,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score every prediction in a folder against its ground truth.

    All pairs are found and their geometry checked before any metric is computed; every
    problem is reported at once.

    Args:
        pred_dir: folder of ``<case>_pred*`` files.
        gt_dir: folder of ground truth (see the module docstring for the layout).
        output_dir: where to write ``evaluation_per_case.csv``, ``evaluation_per_slice.csv``
            (volumes) and ``evaluation_summary.json``; default ``pred_dir``. These names differ
            from ``run_inference``'s own ``metrics_*`` files, so evaluating a run's folder never
            replaces them. The summary is written last; if writing stops part-way (full disk),
            none of the three files is left.
        surface: compute HD95 and NSD.
        nsd_tolerance: NSD tolerance in mm (pixels for images).
        axis: served slice axis of volumes for the per-slice table.
        overwrite: replace the evaluation files of an earlier evaluation in ``output_dir``
            (without it they are a refusal, before any metric is computed).

    Returns:
        The summary (also written as JSON): cases, labels, GT cases without a prediction and
        the metric aggregates of :func:`s2unet.metrics.summarize` under ``metrics``.

    Raises:
        DataError: missing or unpaired files, geometry mismatches (all listed), or earlier
            evaluation files in ``output_dir`` without ``overwrite``.
    """
    out = Path(output_dir) if output_dir is not None else Path(pred_dir)
    outputs = [out / f"{EVALUATION_PREFIX}_{name}" for name in EVALUATION_FILES]
    refusal = None if overwrite else earlier_results(out, [p.name for p in outputs])
    if refusal:
        raise DataError(f"cannot evaluate: {refusal}")
    kind, predictions = find_predictions(pred_dir)
    labels = sorted({label for files in predictions.values() for label in files if label is not None}) or None
    cfg = DataConfig(kind=kind, task="multilabel" if labels else "binary")
    reference = ReferenceIndex(gt_dir, kind, labels)
    pairs: list[tuple[str, list[Path], list[Path]]] = []
    problems: list[str] = []
    for case, files in sorted(predictions.items()):
        pred_files = [files[label] for label in labels] if labels else [files[None]]
        try:
            gt_files = reference.paths(case)
            for pred_file in pred_files:
                like = load_nifti(pred_file, cfg.reorient) if kind == "volume" else load_masks([pred_file], cfg).shape[1:]
                check_reference_geometry(gt_files, like, cfg)
        except DataError as exc:
            problems.append(str(exc))
            continue
        pairs.append((case, pred_files, gt_files))
    if problems:
        raise DataError("cannot evaluate:\n  " + "\n  ".join(problems))
    check_writable(out)  # a read-only folder before the metrics, not after

    case_rows: list[dict[str, Any]] = []
    slice_rows: list[dict[str, Any]] = []
    for case, pred_files, gt_files in pairs:
        pred = load_masks(pred_files, cfg)
        spacing = load_nifti(pred_files[0], cfg.reorient).zooms if kind == "volume" else None
        row, rows = case_metrics(
            pred, load_masks(gt_files, cfg), case, labels, spacing,
            slice_axis=axis if kind == "volume" else None, surface=surface, nsd_tolerance=nsd_tolerance,
        )
        case_rows.append(row)
        slice_rows.extend(rows)

    unpredicted = sorted(reference.cases() - set(predictions))
    summary = {
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        "kind": kind,
        "labels": labels or [],
        "cases": [c for c, _, _ in pairs],
        "gt_without_prediction": unpredicted,
        "surface": surface,
        "nsd_tolerance": nsd_tolerance,
        "metrics": summarize(case_rows, slice_rows),
    }
    for path in outputs:  # an earlier per-slice table would not belong to this evaluation
        path.unlink(missing_ok=True)
    with all_or_none(outputs):
        write_metric_tables(out, case_rows, slice_rows, prefix=EVALUATION_PREFIX)
        write_json(outputs[-1], summary)
    print(format_summary(summary["metrics"]))
    return summary
