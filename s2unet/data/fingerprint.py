"""A dataset fingerprint (after nnU-Net's): what a model's inputs looked like, measured on the
model inputs themselves (windowed, normalised, at native resolution) so that a new case can be
compared with what the model learned.

Measured per slice and pooled:

- intensities of the body's pixels (the air around the body varies with the field of view, so
  it would mix two properties): quantiles at 1..99 % and a coarse histogram;
- field of view: the fraction of the frame's rows and columns the body's bounding box covers
  (body: Otsu threshold, largest component, holes filled), and the same for the lungs (air
  inside the body: the dark components of the filled body);
- in-plane pixel size where the file knows it; the orientation the slices are served in;
- foreground share: label pixels / pixels (pooled, and the smallest and largest per case).

Pure numpy with scipy.ndimage and SimpleITK's Otsu threshold; no torch, no models.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
from scipy import ndimage

LEVELS = tuple(range(1, 100))  # intensity quantile levels, percent
HISTOGRAM_BINS = 32  # the stored coarse histogram
_FINE_BINS = 1024  # pooled per-slice histograms the quantiles are read from (0..1 inputs)
# A dark component inside the body counts as lung when it holds at least this share of the body
# (bowel gas and noise are smaller).
LUNG_MIN_SHARE = 0.01


@dataclass
class SliceMeasure:
    """The fingerprint measurements of one model input slice."""

    histogram: np.ndarray  # _FINE_BINS counts of body pixel values in 0..1
    body_box: Optional[tuple[float, float, float, float]]  # (top, bottom, left, right) as frame fractions
    lung_box: Optional[tuple[float, float, float, float]]
    pixels: int
    foreground: Optional[int] = None  # label pixels, for training slices


def _otsu(gray: np.ndarray) -> float:
    import SimpleITK as sitk

    otsu = sitk.OtsuThresholdImageFilter()
    otsu.Execute(sitk.GetImageFromArray(gray.astype(np.float32)))
    return float(otsu.GetThreshold())


def _box(mask: np.ndarray) -> Optional[tuple[float, float, float, float]]:
    """The bounding box of a mask as fractions of the frame (bottom/right exclusive)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    h, w = mask.shape
    return rows[0] / h, (rows[-1] + 1) / h, cols[0] / w, (cols[-1] + 1) / w


def body_and_lungs(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The body (largest bright component, holes filled) and the lungs (the large dark components
    inside it) of a 2D model input.

    Args:
        gray: (H, W) values in 0..1.

    Returns:
        Two bool (H, W) masks; empty for a constant slice.
    """
    empty = np.zeros(gray.shape, bool)
    if float(gray.max()) <= float(gray.min()):
        return empty, empty
    bright = gray > _otsu(gray)
    labels, n = ndimage.label(bright)
    if n == 0:
        return empty, empty
    sizes = ndimage.sum_labels(bright, labels, index=np.arange(1, n + 1))
    body = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    dark = body & ~bright
    labels, n = ndimage.label(dark)
    if n == 0:
        return body, empty
    sizes = ndimage.sum_labels(dark, labels, index=np.arange(1, n + 1))
    keep = 1 + np.flatnonzero(sizes >= LUNG_MIN_SHARE * body.sum())
    return body, np.isin(labels, keep)


def measure_slice(inputs: np.ndarray, target: Optional[np.ndarray] = None) -> SliceMeasure:
    """Measure one model input.

    Args:
        inputs: (C, H, W) or (H, W) in 0..1; the centre channel is measured.
        target: (C, H, W) / (H, W) labels (foreground > 0 in any channel), for training slices.

    Returns:
        The slice's measurements.
    """
    gray = np.asarray(inputs, dtype=np.float32)
    gray = gray[gray.shape[0] // 2] if gray.ndim == 3 else gray
    body, lungs = body_and_lungs(gray)
    values = gray[body] if body.any() else gray.ravel()
    hist = np.histogram(np.clip(values, 0.0, 1.0), bins=_FINE_BINS, range=(0.0, 1.0))[0]
    foreground = None
    if target is not None:
        t = np.asarray(target)
        foreground = int(((t > 0).any(axis=0) if t.ndim == 3 else t > 0).sum())
    return SliceMeasure(hist, _box(body), _box(lungs), int(gray.size), foreground)


def _quantiles(hist: np.ndarray) -> list[float]:
    """Quantiles at :data:`LEVELS` of values with this fine histogram (linear within a bin)."""
    cdf = np.concatenate([[0.0], np.cumsum(hist, dtype=np.float64)])
    cdf /= max(cdf[-1], 1.0)
    edges = np.linspace(0.0, 1.0, len(hist) + 1)
    keep = np.concatenate([[True], np.diff(cdf) > 0])  # strictly increasing for np.interp
    return [float(v) for v in np.interp(np.asarray(LEVELS) / 100.0, cdf[keep], edges[keep])]


def _median_box(boxes: Sequence[Optional[tuple[float, ...]]]) -> Optional[list[float]]:
    found = [b for b in boxes if b is not None]
    return [float(v) for v in np.median(np.asarray(found), axis=0)] if found else None


@dataclass
class Fingerprint:
    """What a set of model inputs looked like (see the module docstring); stored in checkpoints
    as :meth:`to_payload` (plain builtins)."""

    intensity_quantiles: list[float]  # at LEVELS percent, body pixels, 0..1 input scale
    histogram: list[float]  # HISTOGRAM_BINS densities over 0..1 (sum 1)
    body_box: Optional[list[float]]  # median (top, bottom, left, right) frame fractions
    lung_box: Optional[list[float]]
    pixel_size: Optional[list[float]]  # median in-plane spacing (rows, cols), mm
    orientation: Optional[str]  # axcodes the slices are served in; None for pictures without geometry
    n_slices: int
    foreground_share: Optional[float] = None  # label pixels / pixels, pooled
    foreground_share_cases: Optional[list[float]] = None  # (smallest, largest) per-case share
    levels: list[int] = field(default_factory=lambda: list(LEVELS))

    @staticmethod
    def extent(box: Optional[Sequence[float]]) -> Optional[tuple[float, float]]:
        """(rows, cols) fractions a (top, bottom, left, right) box covers."""
        return None if box is None else (box[1] - box[0], box[3] - box[2])

    def to_payload(self) -> dict[str, Any]:
        """Plain builtins for a checkpoint."""
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Fingerprint":
        """The inverse of :meth:`to_payload`."""
        return cls(**payload)


def pool(measures: Sequence[SliceMeasure], pixel_sizes: Sequence[Optional[tuple[float, float]]] = (),
         orientations: Sequence[Optional[str]] = (), cases: Sequence[str] = ()) -> Fingerprint:
    """The fingerprint of some measured slices.

    Args:
        measures: one per slice.
        pixel_sizes: per slice, the in-plane (rows, cols) spacing or None where unknown.
        orientations: per slice, the axcodes it is served in (None: no geometry).
        cases: per slice, its case id (for the per-case foreground shares).

    Returns:
        The Fingerprint (foreground entries only when every slice has a target).
    """
    if not measures:
        raise ValueError("a fingerprint needs at least one slice")
    hist = np.sum([m.histogram for m in measures], axis=0)
    coarse = hist.reshape(HISTOGRAM_BINS, -1).sum(axis=1).astype(np.float64)
    known = [p for p in pixel_sizes if p is not None]
    named = Counter(o for o in orientations if o is not None).most_common(1)
    share = cases_share = None
    if all(m.foreground is not None for m in measures):
        share = sum(m.foreground for m in measures) / sum(m.pixels for m in measures)  # type: ignore[misc]
        per_case: dict[str, list[int]] = {}
        for m, case in zip(measures, cases):
            per_case.setdefault(case, [0, 0])
            per_case[case][0] += m.foreground  # type: ignore[operator]
            per_case[case][1] += m.pixels
        shares = [f / p for f, p in per_case.values()]
        cases_share = [min(shares), max(shares)] if shares else None
    return Fingerprint(
        intensity_quantiles=_quantiles(hist),
        histogram=[float(v) for v in coarse / max(coarse.sum(), 1.0)],
        body_box=_median_box([m.body_box for m in measures]),
        lung_box=_median_box([m.lung_box for m in measures]),
        pixel_size=[float(v) for v in np.median(np.asarray(known), axis=0)] if known else None,
        orientation=named[0][0] if named else None,
        n_slices=len(measures),
        foreground_share=share,
        foreground_share_cases=cases_share,
    )


def spread_indices(n: int, at_most: int) -> list[int]:
    """Up to ``at_most`` indices of ``range(n)``, evenly spread (all of them when ``n`` is smaller)."""
    if n <= at_most:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, at_most)})


def quantile_shift(a: Fingerprint, b: Fingerprint) -> float:
    """Mean absolute difference of the intensity quantiles (about the 1-Wasserstein distance of
    the body intensities, in units of the 0..1 input scale)."""
    return float(np.mean(np.abs(np.asarray(a.intensity_quantiles) - np.asarray(b.intensity_quantiles))))


def dataset_fingerprint(datasets: Sequence[Any], at_most: int = 64) -> Fingerprint:
    """The fingerprint of training datasets, from up to ``at_most`` of their items, evenly spread.

    Args:
        datasets: :class:`~s2unet.data.SliceDataset` s (their ``native_item`` and ``geometry``:
            the un-augmented model inputs at native resolution).
        at_most: items measured (the fingerprint is cheap: about 10 ms per slice).

    Returns:
        The Fingerprint, with foreground shares.
    """
    items = [(n, d, i) for n, d in enumerate(datasets) for i in range(len(d))]
    measures, sizes, orientations, cases = [], [], [], []
    for j in spread_indices(len(items), at_most):
        n, dataset, i = items[j]
        inputs, target = dataset.native_item(i)
        measures.append(measure_slice(inputs, target))
        size, orientation = dataset.geometry(i)
        sizes.append(size)
        orientations.append(orientation)
        cases.append(f"{n}/{dataset.items[i][0]}")  # a rehearsed case may share an id with a new one
    return pool(measures, sizes, orientations, cases)
