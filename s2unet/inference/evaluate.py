"""Score prediction files against ground truth (``python -m s2unet evaluate --pred DIR --gt DIR``).

Predictions are the files :func:`s2unet.inference.run_inference` writes:
``<case>_pred.nii.gz`` / ``<case>_pred.png`` (one label), or ``<case>_pred_<label>.*`` (one file
per label; ``.mha`` / ``.nrrd`` for such inputs), or a folder named as nnU-Net names its
predictions, ``<case>.nii.gz`` (a folder without ``_pred`` files). Ground truth is found by case id:
``<gt>/<case>.<ext>`` for one label, ``<gt>/<label>/<case>.<ext>`` per label (the layout of the
shared SCR masks). Any volume / picture format of :mod:`s2unet.io.formats` is accepted on either
side. Foreground is value > 0 for volumes and ``read_mask``'s rule
(more than half the value range; label maps 0/1/2...: value > 0) for images; multiclass label maps are therefore scored as
foreground versus background here.

Volumes are compared in the served orientation of their ``data`` config (the convention
:data:`~s2unet.io.case.ORIENTATION` by default) with their header spacing and sliced along served
axis 2 (axial for real scans), which is what ``run_inference`` does for models trained with the
default ``data.reorient``/``data.axis``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..config import DataConfig
from ..data import CaseImage, DataError, check_same_geometry, read_case
from ..data.cases import index_folder
from ..data.labelled import manifest_near
from ..io.discovery import case_id
from ..io.formats import describe_formats, find_format
from ..metrics import DEFAULT_NSD_TOLERANCE, case_metrics, format_summary, summarize
from ..io import all_or_none, check_writable
from ..predict import load_masks
from .outputs import earlier_results, write_csv, write_json

PathLike = Union[str, Path]
PRED_MARK = "_pred"
EVALUATION_PREFIX = "evaluation"
EVALUATION_FILES = ("per_case.csv", "per_slice.csv", "summary.json")  # the summary last


class ReferenceIndex:
    """Finds a case's reference files (ground truth or lung masks) under a file or a folder.

    Args:
        root: a single file (valid for one case only) or a folder.
        labels: for per-label references, the sub-folder names (one per label); None for one
            file per case.
    """

    def __init__(self, root: PathLike, labels: Optional[Sequence[str]] = None) -> None:
        self.root = Path(root)
        self.labels = list(labels) if labels is not None else None
        self._index: dict[tuple[Path, str], dict[str, Path]] = {}
        if not self.root.exists():
            raise DataError(f"{self.root} does not exist")
        if self.root.is_file() and self.labels is not None:
            raise DataError(f"{self.root} is a file; per-label references need a folder with one sub-folder per label")
        self.partial = manifest_near(self.root if self.root.is_dir() else self.root.parent)

    def cases(self, kind: str) -> set[str]:
        """Case ids of ``kind`` files present (in the first label folder for per-label references)."""
        if self.is_file:
            return set()
        return set(index_folder(self.root / self.labels[0] if self.labels else self.root, kind))

    @property
    def is_file(self) -> bool:
        """True when the root is one file (the reference of a single case)."""
        return self.root.is_file()

    def _lookup(self, folder: Path, case: str, kind: str) -> Path:
        if (folder, kind) not in self._index:
            self._index[folder, kind] = index_folder(folder, kind)
        found = self._index[folder, kind].get(case)
        if found is None:
            raise DataError(f"no {kind} file named {case}.* in {folder} ({describe_formats(kind)})")
        return found

    def paths(self, case: str, kind: str) -> list[Path]:
        """The case's files, one per label (or one).

        Args:
            case: the case id.
            kind: the kind of the case's own file (``CaseImage.format.kind``): a volume's
                reference is a volume, a 2D picture's a 2D picture.

        Raises:
            DataError: a file (or label folder) is missing; the message names where it looked. A
                volume labelled on some slices only (listed in a ``labelled_slices.json`` of the
                label app beside the references) is refused: its other slices are not background.
        """
        if self.partial is not None and case in self.partial.cases:
            raise DataError(f"{self.partial.path}: {case} is labelled on slices {self.partial.cases[case]} only, so "
                            "its other slices would count as background; score it with training's validation "
                            "(data.labelled_slices) or mark all its slices in the label app")
        if self.is_file:
            return [self.root]
        if self.labels is None:
            return [self._lookup(self.root, case, kind)]
        return [self._lookup(self.root / label, case, kind) for label in self.labels]


def check_reference_geometry(reference: Sequence[Path], like: CaseImage, cfg: DataConfig) -> None:
    """Raise unless every reference file matches the geometry of what it will be compared with.

    Args:
        reference: reference files.
        like: the image (or prediction): a volume's shape and affine must match; a 2D
            picture's (H, W).
        cfg: reading options (see :func:`load_masks`).

    Raises:
        DataError: naming the files and the mismatch, or an unreadable file.
    """
    for path in reference:
        if not like.planar:
            check_same_geometry(like, read_case(path, "volume", cfg.served))
            continue
        shape, own = load_masks([path], cfg).shape[1:], like.shape[1::-1]
        if shape != own:
            raise DataError(f"{path} has shape {shape} but the image it belongs to has shape {own}")


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


def _prediction_name(path: Path, nnunet: bool = False) -> Optional[tuple[str, str, Optional[str]]]:
    """``(kind, case, label)`` of a prediction file name, or None for other files.

    s2unet's names are ``<case>_pred<suffix>`` / ``<case>_pred_<label><suffix>``; with
    ``nnunet`` every file of a known format is one, named ``<case><suffix>`` as nnU-Net names them.
    """
    fmt = find_format(path)
    stem = None if fmt is None else case_id(path)
    if stem is None:
        return None
    if nnunet:
        return fmt.kind, stem, None
    case, mark, rest = stem.rpartition(PRED_MARK)
    if not mark or not case or (rest and not rest.startswith("_")):
        return None
    return fmt.kind, case, rest[1:] or None


def find_predictions(pred_dir: PathLike) -> tuple[str, dict[str, dict[Optional[str], Path]]]:
    """Prediction files of a folder, grouped by case.

    Args:
        pred_dir: folder holding ``<case>_pred*`` files, or (a folder without any) nnU-Net's
            ``<case><suffix>`` files.

    Returns:
        ``(kind, {case: {label or None: path}})``.

    Raises:
        DataError: no predictions (the message lists every accepted name), NIfTI and image
            predictions mixed, per-label and single files mixed, or cases with different label sets.
    """
    folder = Path(pred_dir)
    if not folder.is_dir():
        raise DataError(f"prediction folder {folder} does not exist")
    files = [p for p in sorted(folder.iterdir()) if p.is_file()]
    # s2unet's folders also hold <case>_prob* and overlays, so nnU-Net's bare names count only
    # in a folder without s2unet predictions.
    nnunet = not any(_prediction_name(p) for p in files)
    kinds: set[str] = set()
    cases: dict[str, dict[Optional[str], Path]] = {}
    for path in files:
        parsed = _prediction_name(path, nnunet)
        if parsed is None:
            continue
        kind, case, label = parsed
        kinds.add(kind)
        if label in cases.setdefault(case, {}):
            raise DataError(f"{cases[case][label]} and {path} are both the prediction of {case}; keep one")
        cases[case][label] = path
    if not cases:
        raise DataError(f"{folder} holds no prediction files: accepted are <case>_pred<suffix> and "
                        f"<case>_pred_<label><suffix> (s2unet) or <case><suffix> (nnU-Net), with a suffix of "
                        f"{describe_formats(folders=False)}")
    if len(kinds) > 1:
        raise DataError(f"{folder} mixes volume and image predictions; evaluate them from separate folders")
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
    cfg = DataConfig(task="multilabel" if labels else "binary")
    reference = ReferenceIndex(gt_dir, labels)
    pairs: list[tuple[str, list[Path], list[Path]]] = []
    problems: list[str] = []
    for case, files in sorted(predictions.items()):
        pred_files = [files[label] for label in labels] if labels else [files[None]]
        try:
            gt_files = reference.paths(case, kind)
            for pred_file in pred_files:
                check_reference_geometry(gt_files, read_case(pred_file, "volume", cfg.served), cfg)
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
        like = read_case(pred_files[0], "volume", cfg.served)
        row, rows = case_metrics(
            pred, load_masks(gt_files, cfg), case, labels, like.spacing,
            slice_axis=like.slice_axis(axis), surface=surface, nsd_tolerance=nsd_tolerance,
        )
        case_rows.append(row)
        slice_rows.extend(rows)

    unpredicted = sorted(reference.cases(kind) - set(predictions))
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
