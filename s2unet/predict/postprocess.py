"""Clean binary predictions: keep what lies inside a region (the lungs), drop tiny components,
keep the largest components, fill holes.

Masks are channel-first ``(C, *spatial)`` booleans; each channel is cleaned on its own, in 2D
for images and in 3D for volumes (a lesion continues across slices, so a component is judged by
its whole 3D extent, not by its cut in one slice).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage


def remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop connected components with fewer than ``min_size`` pixels/voxels.

    Connectivity is full (8 in 2D, 26 in 3D) so diagonally touching pieces of one lesion count
    as one component and are not removed piecewise.

    Args:
        mask: (C, *spatial) binary mask.
        min_size: smallest component kept, in pixels/voxels; 0 or 1 keeps everything.

    Returns:
        A new bool mask of the same shape.
    """
    out = np.asarray(mask, dtype=bool).copy()
    if min_size <= 1:
        return out
    structure = ndimage.generate_binary_structure(out.ndim - 1, out.ndim - 1)
    for channel in out:
        labels, n = ndimage.label(channel, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False  # background
        channel[small[labels]] = False
    return out


def restrict_to_region(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Keep only the foreground inside ``region`` (e.g. lesions inside the lungs).

    Args:
        mask: (C, *spatial) binary mask.
        region: spatial binary mask, or (1, *spatial).

    Returns:
        A new bool mask of ``mask``'s shape.

    Raises:
        ValueError: the region's spatial shape differs from the mask's.
    """
    m = np.asarray(mask, dtype=bool)
    r = np.asarray(region, dtype=bool)
    r = r[0] if r.ndim == m.ndim else r
    if r.shape != m.shape[1:]:
        raise ValueError(f"region shape {r.shape} differs from the prediction's spatial shape {m.shape[1:]}")
    return m & r[None]


def keep_largest_components(mask: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Keep the ``counts[c]`` largest connected components of each channel ``c``.

    Stray blobs away from an organ (a lung prediction on the shoulder, a heart fragment in the
    abdomen) are what makes the 95th-percentile Hausdorff distance of an otherwise good mask
    explode; organs have a known number of pieces. Full connectivity as in
    :func:`remove_small_components`; ties in size are broken by label order (deterministic).

    Args:
        mask: (C, *spatial) binary mask.
        counts: one count for all channels, or one per channel; empty keeps everything.

    Returns:
        A new bool mask of the same shape.

    Raises:
        ValueError: a count list whose length is neither 1 nor C.
    """
    out = np.asarray(mask, dtype=bool).copy()
    if not counts:
        return out
    if len(counts) not in (1, len(out)):
        raise ValueError(f"keep_largest has {len(counts)} counts for {len(out)} channels")
    per_channel = list(counts) * len(out) if len(counts) == 1 else list(counts)
    structure = ndimage.generate_binary_structure(out.ndim - 1, out.ndim - 1)
    for channel, keep in zip(out, per_channel):
        labels, n = ndimage.label(channel, structure=structure)
        if n <= keep:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        kept = np.zeros(n + 1, dtype=bool)
        kept[1 + np.argsort(-sizes, kind="stable")[:keep]] = True
        channel[:] = kept[labels]
    return out


def fill_holes(mask: np.ndarray, slice_axis: Optional[int] = None) -> np.ndarray:
    """Fill the holes enclosed by each channel's foreground.

    Args:
        mask: (C, *spatial) binary mask.
        slice_axis: for volumes, the spatial axis the model slices along: holes are filled in
            each slice (a hole in one slice is rarely closed in 3D); None fills in 2D images.

    Returns:
        A new bool mask of the same shape.
    """
    out = np.asarray(mask, dtype=bool).copy()
    for channel in out:
        if slice_axis is None:
            channel[:] = ndimage.binary_fill_holes(channel)
            continue
        planes = np.moveaxis(channel, slice_axis, 0)  # a view: filling writes into ``out``
        for k in range(planes.shape[0]):
            planes[k] = ndimage.binary_fill_holes(planes[k])
    return out


def postprocess(
    mask: np.ndarray,
    min_size: int = 0,
    region: Optional[np.ndarray] = None,
    keep_largest: Sequence[int] = (),
    holes: bool = False,
    slice_axis: Optional[int] = None,
) -> np.ndarray:
    """Region restriction, small-component removal, largest components, hole filling, in order.

    In this order a lesion mostly outside the lungs whose inside part is tiny disappears, rather
    than leaving a sliver along the lung border, and holes are filled only in what is kept.

    Args:
        mask: (C, *spatial) binary mask.
        min_size: see :func:`remove_small_components`.
        region: optional spatial mask to restrict to.
        keep_largest: see :func:`keep_largest_components` (``PostprocessConfig.keep_largest``).
        holes: fill holes (``PostprocessConfig.fill_holes``), see :func:`fill_holes`.
        slice_axis: the slice axis of a volume (spatial index), None for 2D images.

    Returns:
        The cleaned bool mask.
    """
    out = restrict_to_region(mask, region) if region is not None else np.asarray(mask, dtype=bool)
    out = keep_largest_components(remove_small_components(out, min_size), keep_largest)
    return fill_holes(out, slice_axis) if holes else out
