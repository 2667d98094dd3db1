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

from .scores import (
    DEFAULT_NSD_TOLERANCE,
    METRICS,
    OVERLAP_METRICS,
    SURFACE_METRICS,
    case_metrics,
    confusion_counts,
    image_diagonal,
    metric_row,
    overlap_scores,
    surface_scores,
)
from .calibration import fit_calibration, sample_pixels
from .summary import describe_empty_references, format_summary, metric_keys, summarize
from .thresholds import FLAT_WINDOW, dice_for_thresholds, flat_threshold, threshold_flatness

__all__ = [
    "DEFAULT_NSD_TOLERANCE", "FLAT_WINDOW", "METRICS", "OVERLAP_METRICS", "SURFACE_METRICS", "case_metrics",
    "confusion_counts", "describe_empty_references", "dice_for_thresholds", "fit_calibration", "flat_threshold",
    "format_summary", "image_diagonal", "metric_keys", "metric_row", "overlap_scores", "sample_pixels", "summarize",
    "surface_scores", "threshold_flatness",
]
