"""Per-case and per-slice scores: confusion counts, overlap, surface distances and flat rows
(the rules for empty masks are in the package docstring, :mod:`s2unet.metrics`)."""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance

from ..runtime import torch_threads

OVERLAP_METRICS = ("dice", "iou", "sensitivity", "specificity")
SURFACE_METRICS = ("hd95", "nsd")
METRICS = OVERLAP_METRICS + SURFACE_METRICS
DEFAULT_NSD_TOLERANCE = 1.0
HD_PERCENTILE = 95.0

Spacing = Sequence[float] | None


def to_numpy(x: Any) -> np.ndarray:
    """Accept numpy arrays and (possibly CUDA, possibly grad-tracking) torch tensors."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def as_mask(x: Any) -> np.ndarray:
    """Any array or tensor as a bool mask (non-zero is foreground)."""
    arr = to_numpy(x)
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
    p, g = as_mask(pred), as_mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    reduced = range(p.ndim) if axes is None else np.atleast_1d(axes)
    total = int(np.prod([p.shape[a] for a in reduced]))
    tp = np.count_nonzero(p & g, axis=axes)
    fp = np.count_nonzero(p & ~g, axis=axes)
    fn = np.count_nonzero(~p & g, axis=axes)
    tp, fp, fn = (np.asarray(v, dtype=np.int64) for v in (tp, fp, fn))
    return tp, fp, total - tp - fp - fn, fn


def empty_safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
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
        "dice": empty_safe_ratio(2 * tp, 2 * tp + fp + fn),
        "iou": empty_safe_ratio(tp, tp + fp + fn),
        "sensitivity": empty_safe_ratio(tp, tp + fn),
        "specificity": empty_safe_ratio(tn, tn + fp),
    }


# ------------------------------------------------------------------------------------ surface
def surface_scores(
    pred: Any, gt: Any, spacing: Spacing = None, nsd_tolerance: float = DEFAULT_NSD_TOLERANCE
) -> dict[str, float]:
    """HD95 and NSD of one binary mask pair (2D or 3D), with the empty rules.

    A 3D pair one voxel thick along an axis (a one-slice volume) is scored as the 2D plane it
    is: a slice stored as a one-slice NIfTI and as a picture get the same distances.

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
    p, g = as_mask(pred), as_mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    sp = _spacing(spacing, p.ndim)
    if p.ndim == 3 and 1 in p.shape:
        # A one-slice volume is a 2D slice: in 3D every pixel would lie on its top or bottom face.
        axis = p.shape.index(1)
        p, g = np.take(p, 0, axis), np.take(g, 0, axis)
        sp = sp[:axis] + sp[axis + 1 :]
    p_any, g_any = bool(p.any()), bool(g.any())
    if not p_any and not g_any:
        return {"hd95": 0.0, "nsd": 1.0}
    if not (p_any and g_any):
        return {"hd95": image_diagonal(p.shape, sp), "nsd": 0.0}
    # monai's edge extraction makes many small reductions (``any``, bounding boxes) on one mask;
    # intra-op threads only add synchronisation to those, which on a busy 2-core machine made
    # per-slice HD95 six times slower.
    with warnings.catch_warnings(), torch_threads(1):
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
    p, g = as_mask(pred), as_mask(gt)
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
