"""Segmentation metrics: the one implementation behind validation, ``infer.py --gt``, ``evaluate``
and the baseline comparison.

Masks are boolean arrays with a leading channel axis, ``(C, *spatial)``: one channel per label
(binary tasks have C = 1; multiclass callers pass the one-hot foreground classes). Spatial may be
2D (an image or a slice) or 3D (a volume); ``spacing`` gives the size of a pixel/voxel along each
spatial axis (mm for NIfTI volumes, 1.0 = pixel units when unknown).

Metrics per channel:

- ``dice``, ``iou``, ``sensitivity``, ``specificity`` from confusion counts (numpy, vectorised).
- ``hd95``: 95th-percentile symmetric Hausdorff distance between the mask boundaries, in spacing
  units (monai's definition: the larger of the two directed 95th percentiles).
- ``nsd``: normalised surface distance (surface Dice): the share of both boundaries lying within
  ``nsd_tolerance`` of the other boundary (monai's definition without sub-voxel areas).
  The default tolerance is 1.0 spacing unit, i.e. 1 mm for volumes with a real header, one pixel
  for images without spacing: on the shared CT (header spacing 1 mm, slices resized to 256 px)
  and the 512 px radiographs this accepts a one-pixel boundary disagreement, which is the
  annotation noise of resized masks.

Empty masks follow fixed rules so that no NaN ever enters a mean:

============================  =====  =====  ===========  ===========  ==============  ===
case                          Dice   IoU    sensitivity  specificity  HD95            NSD
============================  =====  =====  ===========  ===========  ==============  ===
GT and prediction empty       1      1      1            1            0               1
GT empty, prediction not      0      0      1            from counts  image diagonal  0
prediction empty, GT not      0      0      0            from counts  image diagonal  0
============================  =====  =====  ===========  ===========  ==============  ===

Sensitivity is 1 when the GT is empty (nothing to miss) and specificity is 1 when the GT covers
every pixel (nothing to flag wrongly). The "image diagonal" is the length of the diagonal of the
evaluated array in spacing units (of the slice for per-slice rows, of the volume for per-case
rows): the worst distance possible inside the image.

A case with an empty reference therefore scores Dice 1 or 0 depending only on whether anything
was predicted. Such rows stay in the means, but :func:`summarize` counts the others
(``n_cases_with_gt``, ``n_slices_with_gt``) and gives their means (``case_mean_with_gt``,
``slice_mean_with_gt``), and :func:`format_summary` prints both whenever they differ, so an empty
reference never passes silently as a perfect score.

With several labels the reference is judged per label, because one label can be empty where the
others are not (no lesion on a slice through the lungs): every row carries ``gt_voxels/<label>``
next to the summed ``gt_voxels``; the "with GT" mean of ``dice/<label>`` leaves out exactly the
rows where that label's reference is empty; the "with GT" mean of the plain ``dice`` is the mean
over labels of those per-label means (the relation the plain key has to the label keys in every
row), over the labels with a reference somewhere; ``n_cases_with_gt`` counts the cases where every
label has a reference, and ``n_cases_empty_by_label`` says which label is empty how often.

Binarisation convention everywhere: a pixel is foreground when ``prob >= threshold``.

Rows are flat dicts. With one channel the keys are the metric names (``dice``, ``hd95``...);
with several, each label gets ``dice/<label>`` keys and the plain key holds the mean over labels,
so ``dice`` is always the model-selection metric.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance

OVERLAP_METRICS = ("dice", "iou", "sensitivity", "specificity")
SURFACE_METRICS = ("hd95", "nsd")
METRICS = OVERLAP_METRICS + SURFACE_METRICS
DEFAULT_NSD_TOLERANCE = 1.0
HD_PERCENTILE = 95.0

Spacing = Sequence[float] | None


def _to_numpy(x: Any) -> np.ndarray:
    """Accept numpy arrays and (possibly CUDA, possibly grad-tracking) torch tensors."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_mask(x: Any) -> np.ndarray:
    arr = _to_numpy(x)
    return arr if arr.dtype == bool else arr > 0


def _spacing(spacing: Spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    out = tuple(float(s) for s in spacing)
    if len(out) != ndim:
        raise ValueError(f"spacing {out} has {len(out)} values for a {ndim}D mask")
    return out


def image_diagonal(shape: Sequence[int], spacing: Spacing = None) -> float:
    """Length of the diagonal of an array of ``shape`` in spacing units (the worst HD95).

    Args:
        shape: spatial shape.
        spacing: pixel/voxel size per axis (1.0 each when None).

    Returns:
        sqrt(sum((n_i * s_i)^2)).
    """
    sp = _spacing(spacing, len(shape))
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, sp))))


# ------------------------------------------------------------------------------------ overlap
def confusion_counts(
    pred: Any, gt: Any, axes: int | tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True/false positives/negatives, summed over ``axes``.

    Args:
        pred: binary prediction (bool or 0/1), any shape.
        gt: binary reference, same shape.
        axes: the axes to reduce (all when None); the others are kept, e.g. ``(1, 2)`` on
            (B, H, W) gives one count per image.

    Returns:
        ``(tp, fp, tn, fn)`` int64 arrays of the kept shape.
    """
    p, g = _as_mask(pred), _as_mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    reduced = range(p.ndim) if axes is None else np.atleast_1d(axes)
    total = int(np.prod([p.shape[a] for a in reduced]))
    tp = np.count_nonzero(p & g, axis=axes)
    fp = np.count_nonzero(p & ~g, axis=axes)
    fn = np.count_nonzero(~p & g, axis=axes)
    tp, fp, fn = (np.asarray(v, dtype=np.int64) for v in (tp, fp, fn))
    return tp, fp, total - tp - fp - fn, fn


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and 1 where den is 0: every 0/0 in the empty rules means 'nothing to get wrong'."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.ones(np.broadcast(num, den).shape), where=den > 0)


def overlap_scores(tp: Any, fp: Any, tn: Any, fn: Any) -> dict[str, np.ndarray]:
    """Dice, IoU, sensitivity and specificity from confusion counts, with the empty rules.

    Args:
        tp, fp, tn, fn: counts (scalars or arrays of one shape).

    Returns:
        ``{"dice", "iou", "sensitivity", "specificity"}`` float64 arrays of the counts' shape.
    """
    tp, fp, tn, fn = (np.asarray(v) for v in (tp, fp, tn, fn))
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


# ------------------------------------------------------------------------------------ surface
@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded for a while.

    monai's edge extraction makes many small reductions (``any``, bounding boxes) on one mask;
    intra-op threads only add synchronisation to those, which on a busy 2-core machine made
    per-slice HD95 six times slower. The previous setting is restored afterwards.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def surface_scores(
    pred: Any, gt: Any, spacing: Spacing = None, nsd_tolerance: float = DEFAULT_NSD_TOLERANCE
) -> dict[str, float]:
    """HD95 and NSD of one binary mask pair (2D or 3D), with the empty rules.

    One monai edge extraction and distance computation serves both metrics (they need the same
    boundary distances, and this is the slow part).

    Args:
        pred: binary prediction, spatial shape only (no channel axis).
        gt: binary reference, same shape.
        spacing: pixel/voxel size per axis.
        nsd_tolerance: NSD tolerance in spacing units.

    Returns:
        ``{"hd95": float, "nsd": float}``.
    """
    p, g = _as_mask(pred), _as_mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    sp = _spacing(spacing, p.ndim)
    p_any, g_any = bool(p.any()), bool(g.any())
    if not p_any and not g_any:
        return {"hd95": 0.0, "nsd": 1.0}
    if not (p_any and g_any):
        return {"hd95": image_diagonal(p.shape, sp), "nsd": 0.0}
    with warnings.catch_warnings(), _one_torch_thread():
        # monai's own internal call of a deprecated get_mask_edges argument
        warnings.simplefilter("ignore", FutureWarning)
        _, (d_pred, d_gt), _ = get_edge_surface_distance(
            torch.from_numpy(p), torch.from_numpy(g), spacing=sp, symmetric=True
        )
    d_pred, d_gt = d_pred.double(), d_gt.double()
    q = HD_PERCENTILE / 100.0
    hd95 = max(torch.quantile(d_pred, q).item(), torch.quantile(d_gt, q).item())
    within = (d_pred <= nsd_tolerance).sum().item() + (d_gt <= nsd_tolerance).sum().item()
    return {"hd95": float(hd95), "nsd": within / (d_pred.numel() + d_gt.numel())}


# --------------------------------------------------------------------------------------- rows
def _check_pair(pred: Any, gt: Any, labels: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    p, g = _as_mask(pred), _as_mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    if p.ndim < 3:
        raise ValueError(f"expected (C, *spatial) masks with 2 or 3 spatial axes, got shape {p.shape}")
    names = list(labels) if labels is not None else [str(c) for c in range(p.shape[0])]
    if len(names) != p.shape[0]:
        raise ValueError(f"{len(names)} label names for {p.shape[0]} channels")
    return p, g, names


def _row(scores: dict[str, Sequence[float]], labels: Sequence[str]) -> dict[str, float]:
    """Flatten per-channel scores into row keys (see the module docstring)."""
    if len(labels) == 1:
        return {k: float(v[0]) for k, v in scores.items()}
    row: dict[str, float] = {k: float(np.mean(v)) for k, v in scores.items()}
    for k, values in scores.items():
        row.update({f"{k}/{name}": float(v) for name, v in zip(labels, values)})
    return row


def _reference_sizes(per_channel: Sequence[int], labels: Sequence[str]) -> dict[str, int]:
    """``gt_voxels`` (summed) and, with several labels, ``gt_voxels/<label>`` (module docstring)."""
    sizes = {"gt_voxels": int(np.sum(per_channel))}
    if len(labels) > 1:
        sizes.update({f"gt_voxels/{name}": int(n) for name, n in zip(labels, per_channel)})
    return sizes


def metric_row(
    pred: Any,
    gt: Any,
    labels: Sequence[str] | None = None,
    spacing: Spacing = None,
    surface: bool = False,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
) -> dict[str, float]:
    """All metrics of one image or volume.

    Args:
        pred: (C, *spatial) binary prediction.
        gt: (C, *spatial) binary reference.
        labels: one name per channel (``"0"``, ``"1"``... when None).
        spacing: pixel/voxel size per spatial axis.
        surface: also compute HD95 and NSD (slower).
        nsd_tolerance: NSD tolerance in spacing units.

    Returns:
        A flat row: metric keys plus ``gt_voxels`` (foreground count summed over channels) and,
        with several labels, ``gt_voxels/<label>`` per channel.
    """
    p, g, names = _check_pair(pred, gt, labels)
    spatial = tuple(range(1, p.ndim))
    scores: dict[str, Any] = overlap_scores(*confusion_counts(p, g, axes=spatial))
    if surface:
        per_channel = [surface_scores(p[c], g[c], spacing, nsd_tolerance) for c in range(p.shape[0])]
        scores.update({k: [s[k] for s in per_channel] for k in SURFACE_METRICS})
    return {**_row(scores, names), **_reference_sizes(np.count_nonzero(g, axis=spatial), names)}


def case_metrics(
    pred: Any,
    gt: Any,
    case: str,
    labels: Sequence[str] | None = None,
    spacing: Spacing = None,
    slice_axis: int | None = None,
    surface: bool = False,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-case metrics and, for volumes, per-slice metrics.

    Args:
        pred: (C, *spatial) binary prediction of one case.
        gt: (C, *spatial) binary reference.
        case: case id, written into every row.
        labels: one name per channel.
        spacing: voxel size per spatial axis.
        slice_axis: spatial axis (0-based, channel axis excluded) to cut slices along; None for
            2D images (no slice rows).
        surface: also compute HD95 and NSD (3D on the case, 2D on each slice).
        nsd_tolerance: NSD tolerance in spacing units.

    Returns:
        ``(case_row, slice_rows)``; slice rows carry ``case`` and ``slice`` (the index along
        ``slice_axis``).
    """
    p, g, names = _check_pair(pred, gt, labels)
    case_row = {"case": case, **metric_row(p, g, names, spacing, surface, nsd_tolerance)}
    if slice_axis is None:
        return case_row, []
    n_spatial = p.ndim - 1
    if not 0 <= slice_axis < n_spatial:
        raise ValueError(f"slice_axis {slice_axis} is outside the {n_spatial} spatial axes")
    # Move slices to axis 1: (C, S, *plane); overlap counts for all slices at once.
    p_s, g_s = np.moveaxis(p, slice_axis + 1, 1), np.moveaxis(g, slice_axis + 1, 1)
    in_plane = tuple(range(2, p_s.ndim))
    scores: dict[str, Any] = overlap_scores(*confusion_counts(p_s, g_s, axes=in_plane))  # (C, S)
    if surface:
        sp = _spacing(spacing, n_spatial)
        plane_spacing = sp[:slice_axis] + sp[slice_axis + 1 :]
        per = [
            [surface_scores(p_s[c, k], g_s[c, k], plane_spacing, nsd_tolerance) for k in range(p_s.shape[1])]
            for c in range(p_s.shape[0])
        ]
        scores.update({m: np.array([[s[m] for s in ch] for ch in per]) for m in SURFACE_METRICS})
    gt_voxels = np.count_nonzero(g_s, axis=in_plane)  # (C, S)
    slice_rows = [
        {
            "case": case,
            "slice": k,
            **_row({m: v[:, k] for m, v in scores.items()}, names),
            **_reference_sizes(gt_voxels[:, k], names),
        }
        for k in range(p_s.shape[1])
    ]
    return case_row, slice_rows


# ---------------------------------------------------------------------------------- aggregate
def metric_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The metric columns present in rows (``dice``, ``dice/lungs``...), in first-seen order."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update({k: None for k in row if k.split("/")[0] in METRICS})
    return list(keys)


def _means(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def _reference_labels(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The labels of multilabel rows (their ``gt_voxels/<label>`` keys); empty for binary rows."""
    names: dict[str, None] = {}
    for row in rows:
        names.update({k.split("/", 1)[1]: None for k in row if k.startswith("gt_voxels/")})
    return list(names)


def _has_reference(row: dict[str, Any], label: str | None) -> bool:
    return row.get("gt_voxels" if label is None else f"gt_voxels/{label}", 0) > 0


def _with_gt(rows: list[dict[str, Any]], keys: list[str]) -> tuple[int, dict[str, float], dict[str, int]]:
    """The "with GT" view of rows, by the per-label rule of the module docstring.

    Returns:
        ``(rows where every label has a reference, means with GT, {label: rows where it is
        empty})``; the last is empty for binary rows.
    """
    labels = _reference_labels(rows)
    if not labels:
        kept = [r for r in rows if _has_reference(r, None)]
        return len(kept), _means(kept, keys) if kept else {}, {}
    label_means: dict[str, float] = {}
    for key in (k for k in keys if "/" in k):
        values = [r[key] for r in rows if key in r and _has_reference(r, key.split("/", 1)[1])]
        if values:
            label_means[key] = float(np.mean(values))
    means: dict[str, float] = {}
    for key in keys:
        # A label key keeps its own mean; a plain key is the mean over labels, in each row and here.
        values = [v for k, v in label_means.items() if k == key or k.split("/", 1)[0] == key]
        if values:
            means[key] = float(np.mean(values))
    n_complete = sum(all(_has_reference(r, name) for name in labels) for r in rows)
    empty = {name: sum(not _has_reference(r, name) for r in rows) for name in labels}
    return n_complete, means, empty


def summarize(per_case_rows: Sequence[dict[str, Any]], per_slice_rows: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Aggregate rows: mean and standard deviation over cases, mean over slices.

    Both views are reported because the literature uses both: most volumetric work averages
    per case, while COVID-SemiSeg / Inf-Net average over slices (their test sets keep only slices
    with infection, so ``slice_mean_with_gt`` is the comparable number for full volumes).
    The standard deviation is the population one (ddof 0), defined for a single case too.

    Args:
        per_case_rows: rows from ``case_metrics``/``metric_row`` (with ``case``).
        per_slice_rows: slice rows from ``case_metrics``; may be empty (2D images).

    Returns:
        ``{"n_cases", "case_mean", "case_std", "n_cases_with_gt", "case_mean_with_gt"}`` plus,
        when slice rows are given, ``{"n_slices", "slice_mean", "n_slices_with_gt",
        "slice_mean_with_gt"}``; each ``*_mean`` and ``*_std`` maps metric key to float. The
        ``*_with_gt`` means leave out rows whose reference is empty (``gt_voxels`` 0), which
        score by the empty rules of this module, per label when there are several (module
        docstring); they are empty dicts when no row has any. Multilabel rows add
        ``n_cases_empty_by_label`` (and ``n_slices_empty_by_label``): label to the number of
        rows where its reference is empty.
    """
    cases = list(per_case_rows)
    keys = metric_keys(cases)
    n_with_gt, means_with_gt, empty = _with_gt(cases, keys)
    out: dict[str, Any] = {
        "n_cases": len(cases),
        "case_mean": _means(cases, keys) if cases else {},
        "case_std": {k: float(np.std([r[k] for r in cases if k in r])) for k in keys} if cases else {},
        "n_cases_with_gt": n_with_gt,
        "case_mean_with_gt": means_with_gt,
    }
    if empty:
        out["n_cases_empty_by_label"] = empty
    slices = list(per_slice_rows)
    if slices:
        skeys = metric_keys(slices)
        n_with_gt, means_with_gt, empty = _with_gt(slices, skeys)
        out.update(n_slices=len(slices), slice_mean=_means(slices, skeys), n_slices_with_gt=n_with_gt,
                   slice_mean_with_gt=means_with_gt)
        if empty:
            out["n_slices_empty_by_label"] = empty
    return out


def describe_empty_references(empty_by_label: dict[str, int], n_cases: int) -> str:
    """Which labels have an empty reference in how many cases, for one warning line.

    Args:
        empty_by_label: label to the number of cases where its reference is empty.
        n_cases: the number of cases.

    Returns:
        E.g. ``"heart in 2 of 10 cases, left_clavicle in 1 of 10"`` (labels never empty omitted).
    """
    parts = [f"{name} in {n} of {n_cases}" for name, n in empty_by_label.items() if n]
    if parts:
        parts[0] += " cases"
    return ", ".join(parts)


def format_summary(summary: dict[str, Any]) -> str:
    """One line per metric: case mean ± std, then the slice means when present.

    When some cases have an empty reference, a first line says how many (per label when there
    are several) and how they score, and each metric line adds the mean over the cases with
    foreground.

    Args:
        summary: from :func:`summarize`.

    Returns:
        The text, one line per metric key.
    """
    lines = []
    n_cases, n_with_gt = summary.get("n_cases", 0), summary.get("n_cases_with_gt", summary.get("n_cases", 0))
    if n_with_gt < n_cases:
        scoring = "(Dice 1 if nothing is predicted there, else 0); 'cases with GT' leaves them out"
        if "n_cases_empty_by_label" in summary:
            lines.append(f"empty references: {describe_empty_references(summary['n_cases_empty_by_label'], n_cases)} "
                         f"{scoring} per label")
        else:
            lines.append(f"{n_cases - n_with_gt} of {n_cases} cases have an empty reference {scoring}")
    for key, mean in summary.get("case_mean", {}).items():
        line = f"{key:<20} {mean:9.4f} ± {summary['case_std'][key]:.4f}"
        if n_with_gt < n_cases:
            line += f" | cases with GT {summary['case_mean_with_gt'].get(key, float('nan')):.4f}"
        if key in summary.get("slice_mean", {}):
            line += f" | slices {summary['slice_mean'][key]:.4f}"
        if key in summary.get("slice_mean_with_gt", {}):
            line += f" | slices with GT {summary['slice_mean_with_gt'][key]:.4f}"
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------- threshold tuning
def dice_for_thresholds(prob: Any, gt: Any, thresholds: Sequence[float], per_item: bool = False) -> np.ndarray:
    """Dice at many thresholds in one pass (for choosing the threshold on validation data).

    Each pixel is binned once by how many thresholds it reaches; cumulative histograms then give
    the predicted-positive and true-positive counts at every threshold, so the cost barely
    grows with the number of thresholds.

    Args:
        prob: probabilities, any shape (torch tensors accepted).
        gt: binary reference, same shape.
        thresholds: the candidate thresholds (any order); foreground is ``prob >= t``.
        per_item: treat axis 0 as items (images or cases) and return one Dice per item.

    Returns:
        (T,) Dice of the whole array per threshold, or (N, T) per item when ``per_item``; the
        both-empty rule gives 1. The mean over items of the per-item Dice matches the case
        mean that ``summarize`` reports.
    """
    p = _to_numpy(prob).astype(np.float32, copy=False)
    g = _as_mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"probability shape {p.shape} differs from ground truth shape {g.shape}")
    thr = np.asarray(thresholds, dtype=np.float32).ravel()
    order = np.argsort(thr)
    n_items = p.shape[0] if per_item else 1
    p, g = p.reshape(n_items, -1), g.reshape(n_items, -1)
    n_bins = thr.size + 1
    # bin b = number of thresholds <= p, so the pixel is positive for the sorted thresholds j < b
    bins = np.searchsorted(thr[order], p, side="right") + n_bins * np.arange(n_items)[:, None]
    hist_all = np.bincount(bins.ravel(), minlength=n_items * n_bins).reshape(n_items, n_bins)
    hist_tp = np.bincount(bins[g], minlength=n_items * n_bins).reshape(n_items, n_bins)
    pred_pos = np.cumsum(hist_all[:, ::-1], axis=1)[:, ::-1][:, 1:]
    tp = np.cumsum(hist_tp[:, ::-1], axis=1)[:, ::-1][:, 1:]
    gt_pos = g.sum(axis=1, keepdims=True)
    dice_sorted = _ratio(2 * tp, pred_pos + gt_pos)
    dice = np.empty_like(dice_sorted)
    dice[:, order] = dice_sorted
    return dice if per_item else dice[0]
