"""Map CT or raw volume intensities to the 0..1 range the encoders expect.

Two regimes, chosen by ``WindowConfig.preset``:

* a HU window (``lung``, ``mediastinum``, ``soft_tissue``, ``bone`` from
  :data:`s2unet.config.WINDOW_PRESETS`, or ``custom``): clip to
  ``[level - width / 2, level + width / 2]`` and scale linearly to 0..1. Explicit ``level`` /
  ``width`` values override a preset's. This only makes sense for data in Hounsfield units:
  the shared COVID set is 8-bit CLAHE (not HU), where a lung window would map almost every
  voxel to 1 — use ``none`` there.
* ``none``: keep the data's own scale: uint8 / 255, uint16 / 65535, bool as 0/1, and anything
  else (int16 HU, float) min-max scaled over the ``value_range`` given, which the datasets set
  to the whole volume's range so that all slices of a case share one scale.
* ``auto``: as ``none``, except that a volume whose range reaches below -500 is taken to be CT
  in Hounsfield units and gets the lung window.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..config import WINDOW_PRESETS, WindowConfig
from .errors import DataError

# Air is -1000 HU; no non-HU image format this toolkit reads goes this far below zero.
HU_FLOOR = -500.0


def window_bounds(window: WindowConfig) -> Optional[tuple[float, float]]:
    """The HU interval a window maps to 0..1, or None for ``preset: none``.

    Args:
        window: the window config.

    Returns:
        ``(low, high)`` in HU, or None.

    Raises:
        DataError: ``custom`` without level/width, an unknown preset, or width <= 0.
    """
    if window.preset in ("none", "auto"):
        return None
    if window.preset == "custom":
        if window.level is None or window.width is None:
            raise DataError("window preset 'custom' needs both level and width")
        level, width = float(window.level), float(window.width)
    else:
        if window.preset not in WINDOW_PRESETS:
            raise DataError(f"unknown window preset {window.preset!r}; known: {sorted(WINDOW_PRESETS)}")
        level, width = WINDOW_PRESETS[window.preset]
        level = float(window.level) if window.level is not None else level
        width = float(window.width) if window.width is not None else width
    if width <= 0:
        raise DataError(f"window width must be > 0, got {width}")
    return level - width / 2.0, level + width / 2.0


def volume_value_range(array: np.ndarray) -> tuple[float, float]:
    """Finite min and max of an array, for per-volume min-max scaling.

    Args:
        array: any numeric array.

    Returns:
        ``(min, max)`` over finite values, ``(0, 0)`` if there are none.
    """
    if array.dtype.kind in "biu":
        return (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    finite = array[np.isfinite(array)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def window_to_unit(
    array: np.ndarray,
    window: WindowConfig,
    value_range: Optional[tuple[float, float]] = None,
) -> np.ndarray:
    """Scale intensities to float32 0..1 according to the window (see the module docstring).

    Args:
        array: a slice or a volume.
        window: the window config.
        value_range: for ``preset: none`` on data that is neither uint8 nor uint16, the
            ``(min, max)`` to scale between, normally the whole volume's; None uses the
            array's own range (per call, hence per slice if given a slice).

    Returns:
        float32 array of the same shape in 0..1 (non-finite input becomes 0).
    """
    bounds = window_bounds(window)
    if bounds is None:
        if array.dtype == np.uint8:
            return array.astype(np.float32) / np.float32(255.0)
        if array.dtype == np.uint16:
            return array.astype(np.float32) / np.float32(65535.0)
        if array.dtype == np.bool_:
            return array.astype(np.float32)
        bounds = value_range if value_range is not None else volume_value_range(array)
        if window.preset == "auto" and bounds[0] <= HU_FLOOR:
            level, width = WINDOW_PRESETS["lung"]
            bounds = (level - width / 2.0, level + width / 2.0)
    low, high = float(bounds[0]), float(bounds[1])
    if high <= low:
        return np.zeros(array.shape, dtype=np.float32)
    out = (array.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)
