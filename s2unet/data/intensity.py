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

After windowing, :func:`normalize_unit` can bring inputs of different sources to one scale
(``DataConfig.normalize``), and :func:`jitter_window` moves a HU window for training.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from ..config import WINDOW_PRESETS, WindowConfig
from .errors import DataError

if TYPE_CHECKING:
    import torch

# Air is -1000 HU; no non-HU image format this toolkit reads goes this far below zero.
HU_FLOOR = -500.0
# The common CLAHE setting (OpenCV's default clip limit, an 8 x 8 tile grid).
CLAHE_CLIP = 2.0
CLAHE_GRID = (8, 8)
# Fine enough that float (HU, 16-bit) inputs keep their order after equalisation, not only 8-bit ones.
EQUALIZE_BINS = 4096


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


def is_hu(dtype: np.dtype, value_range: Optional[tuple[float, float]]) -> bool:
    """Whether data is taken to be CT in Hounsfield units: not 8/16-bit or bool, and its range
    (the volume's (min, max); None when unknown) reaches below -500. ``auto`` windows such data
    as lung; HU presets mean nothing on other data (a lung window turns 8-bit data white).
    """
    return np.dtype(dtype) not in (np.uint8, np.uint16, np.bool_) and value_range is not None \
        and value_range[0] <= HU_FLOOR


def hu_bounds(
    dtype: np.dtype, window: WindowConfig, value_range: Optional[tuple[float, float]]
) -> Optional[tuple[float, float]]:
    """The HU interval :func:`window_to_unit` maps to 0..1, or None when no HU window applies.

    Args:
        dtype: the data's dtype.
        window: the window config.
        value_range: the volume's (min, max), used by ``auto`` to recognise HU data.

    Returns:
        ``(low, high)`` in HU for a HU preset, or for ``auto`` on data reaching below -500
        HU; None for ``none``, for 8/16-bit data under ``auto``, and when the range is unknown.
    """
    bounds = window_bounds(window)
    if bounds is not None:
        return bounds
    if window.preset != "auto" or not is_hu(dtype, value_range):
        return None
    level, width = WINDOW_PRESETS["lung"]
    return level - width / 2.0, level + width / 2.0


def jitter_window(bounds: tuple[float, float], amount: float, rng: np.random.Generator) -> WindowConfig:
    """A custom window near ``bounds``: the level moved and the width scaled by up to ``amount``.

    Hospitals window CT differently; training on nearby windows keeps the model from relying on
    one exact mapping of HU to input values.

    Args:
        bounds: ``(low, high)`` of the HU window the data would get.
        amount: the level moves by up to ``amount * width``, the width scales by
            ``1 ± amount`` (kept above 1 % of the original).
        rng: the random generator (seeded per item by the dataset).

    Returns:
        A ``custom`` WindowConfig.
    """
    low, high = bounds
    width = high - low
    level = (low + high) / 2.0 + float(rng.uniform(-amount, amount)) * width
    width = width * max(0.01, 1.0 + float(rng.uniform(-amount, amount)))
    return WindowConfig(preset="custom", level=level, width=width)


def normalize_unit(stack: np.ndarray, mode: str) -> np.ndarray:
    """Bring a windowed (C, H, W) input in 0..1 to a source-independent scale.

    Args:
        stack: float32 (C, H, W) in 0..1 (the channels of one slice, e.g. 2.5D neighbours).
        mode: ``none`` (returned as is), ``percentile`` (the stack's 1st..99th percentiles,
            taken over all channels so neighbours keep one scale, stretched to 0..1) or
            ``clahe`` (each channel contrast-limited adaptive histogram equalised by kornia,
            clip limit 2, an 8 x 8 grid) or ``equalize`` (global histogram equalisation of the
            stack by monai, 4096 bins: each value becomes its rank, so any monotone change of
            window, contrast or gamma between sources gives the same input up to binning).

    Returns:
        float32 (C, H, W) in 0..1.

    Raises:
        ValueError: an unknown mode.
    """
    if mode == "none":
        return stack
    if mode == "percentile":
        low, high = np.percentile(stack, (1.0, 99.0))
        if high <= low:  # an (almost) constant slice has no contrast to stretch
            return stack
        return np.clip((stack - np.float32(low)) / np.float32(high - low), 0.0, 1.0).astype(np.float32)
    if mode == "clahe":
        import torch

        return clahe(torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))).numpy()
    if mode == "equalize":
        from monai.transforms.utils import equalize_hist

        if float(stack.max()) <= float(stack.min()):  # a constant slice has no histogram to spread
            return stack
        return equalize_hist(stack, num_bins=EQUALIZE_BINS, min=0, max=1).astype(np.float32)
    raise ValueError(f"unknown normalisation {mode!r}; use none, percentile, clahe or equalize")


def clahe(stack: "torch.Tensor") -> "torch.Tensor":
    """Contrast-limited adaptive histogram equalisation of each channel (kornia).

    Args:
        stack: float (C, H, W) in 0..1 (a plain tensor or a monai MetaTensor).

    Returns:
        float32 (C, H, W) in 0..1, a plain tensor.
    """
    import torch
    from kornia.enhance import equalize_clahe

    x = stack.as_tensor() if hasattr(stack, "as_tensor") else stack
    with torch.no_grad():
        out = equalize_clahe(x.float().clamp(0.0, 1.0)[:, None], clip_limit=CLAHE_CLIP, grid_size=CLAHE_GRID)
    return out[:, 0].clamp_(0.0, 1.0)


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
        bounds = hu_bounds(array.dtype, window, bounds) or bounds
    low, high = float(bounds[0]), float(bounds[1])
    if high <= low:
        return np.zeros(array.shape, dtype=np.float32)
    out = (array.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)
