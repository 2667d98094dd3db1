"""Clean binary predictions: keep what lies inside a region (the lungs), drop tiny components.

Masks are channel-first ``(C, *spatial)`` booleans; each channel is cleaned on its own, in 2D
for images and in 3D for volumes (a lesion continues across slices, so a component is judged by
its whole 3D extent, not by its cut in one slice).
"""
from __future__ import annotations

from typing import Optional

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


def postprocess(mask: np.ndarray, min_size: int = 0, region: Optional[np.ndarray] = None) -> np.ndarray:
    """Region restriction first, then small-component removal.

    In this order a lesion mostly outside the lungs whose inside part is tiny disappears, rather
    than leaving a sliver along the lung border.

    Args:
        mask: (C, *spatial) binary mask.
        min_size: see :func:`remove_small_components`.
        region: optional spatial mask to restrict to.

    Returns:
        The cleaned bool mask.
    """
    out = restrict_to_region(mask, region) if region is not None else np.asarray(mask, dtype=bool)
    return remove_small_components(out, min_size)
