"""Per-case clinical numbers of a prediction: lesion volume, lung share, slices involved.

Volumes in mL come from the voxel spacing in the header (mm): one voxel is ``prod(zooms) / 1000``
mL. Every volume report says ``volume_units``: ``"mL"``, or ``"relative"`` with a
``volume_caveat`` when the spacing is the 1 mm placeholder tools write when they know none (the
shared COVID set: its millilitres are only comparable between its own cases) or is implausible
(:data:`~s2unet.io.case.PLAUSIBLE_SPACING_MM`). 2D images have no reliable pixel size (PNG/JPEG
carry none), so their reports give pixel counts and percentages.

Keys follow the metrics convention: with one label they are plain (``volume_ml``), with
several each label gets ``volume_ml/<label>``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


def voxel_volume_ml(zooms: Sequence[float]) -> float:
    """Volume of one voxel in mL from its edge lengths in mm."""
    return float(np.prod([float(z) for z in zooms])) / 1000.0


def case_report(
    case: str,
    mask: np.ndarray,
    labels: Sequence[str],
    spacing: Optional[Sequence[float]] = None,
    lung: Optional[np.ndarray] = None,
    slice_axis: Optional[int] = None,
    spacing_caveat: Optional[str] = None,
) -> dict[str, Any]:
    """Size of each predicted label in one case.

    Args:
        case: case id.
        mask: (C, *spatial) binary prediction (after post-processing).
        labels: one name per channel.
        spacing: voxel size in mm per spatial axis (volumes); ignored for 2D images.
        lung: optional spatial lung mask; adds the lung size and each label's share of it
            (the part of the label inside the lungs).
        slice_axis: for volumes, the spatial axis slices are counted along.
        spacing_caveat: why the spacing is not a real one
            (:attr:`~s2unet.io.case.CaseImage.spacing_caveat`): the volumes are then relative.

    Returns:
        A flat dict: ``case``, ``shape``, then per label ``voxels`` and, for volumes,
        ``volume_ml`` and ``slices_with_foreground`` (with ``slice_axis``) after
        ``spacing_mm``, ``volume_units`` and any ``volume_caveat``, or for images
        ``percent_of_image``; with a lung mask ``lung_voxels`` (and ``lung_volume_ml``) and
        ``percent_of_lung``.
    """
    m = np.asarray(mask, dtype=bool)
    spatial = m.shape[1:]
    is_volume = len(spatial) == 3
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * len(spatial)
    voxel_ml = voxel_volume_ml(sp)
    report: dict[str, Any] = {"case": case, "shape": "x".join(str(s) for s in spatial)}
    if is_volume:
        report["spacing_mm"] = "x".join(f"{s:g}" for s in sp)
        report["volume_units"] = "relative" if spacing_caveat else "mL"
        if spacing_caveat:
            report["volume_caveat"] = spacing_caveat
    lung_mask = None
    if lung is not None:
        lung_mask = np.asarray(lung, dtype=bool).reshape(spatial)
        report["lung_voxels"] = int(lung_mask.sum())
        if is_volume:
            report["lung_volume_ml"] = report["lung_voxels"] * voxel_ml

    def key(name: str, label: str) -> str:
        return name if len(labels) == 1 else f"{name}/{label}"

    other_axes = tuple(a for a in range(len(spatial)) if a != slice_axis)
    for label, channel in zip(labels, m):
        voxels = int(channel.sum())
        report[key("voxels", label)] = voxels
        if is_volume:
            report[key("volume_ml", label)] = voxels * voxel_ml
            if slice_axis is not None:
                report[key("slices_with_foreground", label)] = int(np.any(channel, axis=other_axes).sum())
        else:
            report[key("percent_of_image", label)] = 100.0 * voxels / channel.size
        if lung_mask is not None:
            inside = int((channel & lung_mask).sum())
            share = 100.0 * inside / report["lung_voxels"] if report["lung_voxels"] else 0.0
            report[key("percent_of_lung", label)] = share
    return report
