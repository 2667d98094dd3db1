"""Harmonisation: bring a case's model inputs towards what the model learned (its training
fingerprint, :mod:`s2unet.data.fingerprint`) before prediction.

- intensity ``histogram``: the case's body-intensity quantiles are mapped onto the training
  fingerprint's, monotone and piecewise linear (0 and 1 stay fixed, so the air outside the
  body keeps its place below the body's values);
- intensity ``clahe``: the CLAHE the shared CT volumes were enhanced with before training
  (:func:`s2unet.data.intensity.normalize_unit`), for scans that were not;
- field of view ``body`` / ``lungs``: a window around the case's body (or lungs: air inside the
  body) bounding box, sized so that the box covers the share of the frame it covered in
  training; the model sees the window, and its probabilities go back into the input's own
  frame, zero (background) outside the window.

One window per case (the median box of its slices), so a volume's slices stay aligned. The
:class:`~s2unet.predict.Predictor` applies a :class:`CaseHarmoniser` to every batch
(:meth:`~s2unet.predict.Predictor.harmonised`); :func:`harmonise` gives the harmonised model
inputs alone (for benchmarks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..data.fingerprint import Fingerprint, measure_slice, pool, spread_indices
from ..data.intensity import normalize_unit

INTENSITY_MODES = ("none", "histogram", "clahe")
FOV_MODES = ("none", "body", "lungs")
# The window always keeps this share of the box's size as margin on each side, also when the
# training box filled the whole frame.
MIN_MARGIN = 0.02


def _increasing(xp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the repeated x values of a quantile table (8-bit data has ties), for np.interp."""
    keep = np.concatenate([[True], np.diff(xp) > 0])
    return xp[keep], fp[keep]


@dataclass(frozen=True)
class CaseHarmoniser:
    """The harmonisation of one case.

    Attributes:
        intensity: ``none``, ``histogram`` or ``clahe``.
        fov: ``none``, ``body`` or ``lungs``.
        mapping: histogram: the (case, training) intensity tables np.interp maps between.
        window: the (top, bottom, left, right) window as frame fractions (may reach outside the
            frame, which is then padded with the slice's lowest value); None: the whole frame.
        note: why a requested step could not be done for this case ("" when all were).
    """

    intensity: str = "none"
    fov: str = "none"
    mapping: Optional[tuple[np.ndarray, np.ndarray]] = None
    window: Optional[tuple[float, float, float, float]] = None
    note: str = ""

    def _pixels(self, frame: tuple[int, int]) -> tuple[int, int, int, int]:
        h, w = frame
        t, b, l, r = self.window  # type: ignore[misc]
        top, left = int(np.floor(t * h)), int(np.floor(l * w))
        return top, max(top + 1, int(np.ceil(b * h))), left, max(left + 1, int(np.ceil(r * w)))

    def _overlap(self, frame: tuple[int, int]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """(frame region, window region) where the window and the frame overlap."""
        top, bottom, left, right = self._pixels(frame)
        h, w = frame
        r0, r1, c0, c1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
        return (slice(r0, r1), slice(c0, c1)), (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))

    def crop(self, x: np.ndarray, fill: Any = 0) -> np.ndarray:
        """The window of (..., H, W) arrays (images or masks), padded with ``fill`` outside the frame.

        Args:
            x: arrays whose last two axes are the frame.
            fill: a scalar, or an array broadcasting against ``x[..., :1, :1]`` (per-channel).

        Returns:
            (..., h, w) in ``x``'s dtype; ``x`` itself without a window.
        """
        if self.window is None:
            return x
        top, bottom, left, right = self._pixels(x.shape[-2:])
        out = np.empty((*x.shape[:-2], bottom - top, right - left), dtype=x.dtype)
        out[...] = fill
        inside, window = self._overlap(x.shape[-2:])
        out[(..., *window)] = x[(..., *inside)]
        return out

    def apply(self, inputs: np.ndarray) -> np.ndarray:
        """Harmonised model inputs of a batch.

        Args:
            inputs: (B, C, H, W) float32 in 0..1 (as from ``prepare_slice``).

        Returns:
            (B, C, h, w) float32 in 0..1, (h, w) the window's size in this frame.
        """
        x = self.crop(inputs, inputs.min(axis=(-2, -1), keepdims=True))
        if self.mapping is not None:
            x = np.interp(x, *self.mapping).astype(np.float32)
        elif self.intensity == "clahe":
            x = np.stack([normalize_unit(item, "clahe") for item in x])
        return x

    def paste(self, prob: np.ndarray, frame: tuple[int, int], background_channel: bool) -> np.ndarray:
        """Probabilities predicted in the window, put back into the input's frame.

        Args:
            prob: (B, C, h, w) at the window's size.
            frame: the input's (H, W).
            background_channel: channel 0 is the background (multiclass): 1 outside the window.

        Returns:
            (B, C, H, W) float32; background outside the window.
        """
        if self.window is None:
            return prob
        out = np.zeros((*prob.shape[:2], *frame), dtype=np.float32)
        if background_channel:
            out[:, 0] = 1.0
        inside, window = self._overlap(frame)
        out[(..., *inside)] = prob[(..., *window)]
        return out

    def describe(self) -> dict[str, Any]:
        """What was done, for reports."""
        return {"intensity": self.intensity, "fov": self.fov,
                "window": None if self.window is None else [round(v, 4) for v in self.window],
                "note": self.note or None}


def _window(case_box: list[float], train_box: list[float]) -> tuple[float, float, float, float]:
    """The window around ``case_box`` in which it covers the share of the frame ``train_box`` did."""
    bounds = []
    for (lo, hi), (tlo, thi) in (((case_box[0], case_box[1]), (train_box[0], train_box[1])),
                                 ((case_box[2], case_box[3]), (train_box[2], train_box[3]))):
        size = max(hi - lo, 1e-6)
        span = max(size / max(thi - tlo, 1e-6), size * (1 + 2 * MIN_MARGIN))
        # Where the box sat in the training frame (its share of the free space above it).
        before = tlo / max(1.0 - (thi - tlo), 1e-6) if thi - tlo < 1.0 else 0.5
        start = lo - (span - size) * before
        bounds += [start, start + span]
    return bounds[0], bounds[1], bounds[2], bounds[3]


def for_case(case: Fingerprint, training: Optional[Fingerprint], intensity: str = "none",
             fov: str = "none") -> CaseHarmoniser:
    """The harmonisation of a case from its fingerprint and the model's.

    Args:
        case: the case's fingerprint (of its un-harmonised model inputs).
        training: the checkpoint's; needed for ``histogram`` and for a field of view.
        intensity: one of :data:`INTENSITY_MODES`.
        fov: one of :data:`FOV_MODES`.

    Returns:
        The CaseHarmoniser (``note`` says when this case has no body or lungs to crop to).

    Raises:
        ValueError: an unknown mode, or a mode needing the training fingerprint without one.
    """
    if intensity not in INTENSITY_MODES or fov not in FOV_MODES:
        raise ValueError(f"harmonisation intensity {intensity!r} / fov {fov!r}: use {INTENSITY_MODES} / {FOV_MODES}")
    if training is None and (intensity == "histogram" or fov != "none"):
        raise ValueError(f"intensity {intensity!r} / fov {fov!r} match the training fingerprint, and there is none")
    mapping = None
    if intensity == "histogram":
        mapping = _increasing(np.asarray([0.0, *case.intensity_quantiles, 1.0]),
                              np.asarray([0.0, *training.intensity_quantiles, 1.0]))  # type: ignore[union-attr]
    window, note = None, ""
    if fov != "none":
        case_box = case.body_box if fov == "body" else case.lung_box
        train_box = training.body_box if fov == "body" else training.lung_box  # type: ignore[union-attr]
        if case_box is None or train_box is None:
            note = f"no {fov} found in {'this case' if case_box is None else 'the training fingerprint'}: not cropped"
        else:
            window = _window(case_box, train_box)
    return CaseHarmoniser(intensity, fov, mapping, window, note)


def harmonise(inputs: np.ndarray, fingerprint: Fingerprint, intensity: str = "none", fov: str = "none",
              at_most: int = 32) -> np.ndarray:
    """Harmonised model inputs of one case (for benchmarks; inference goes through the Predictor).

    Args:
        inputs: the case's model inputs in 0..1: one slice (H, W) or (C, H, W), or its slices
            (N, C, H, W).
        fingerprint: the model's training fingerprint.
        intensity: one of :data:`INTENSITY_MODES`.
        fov: one of :data:`FOV_MODES`.
        at_most: slices measured for the case's own fingerprint.

    Returns:
        The harmonised inputs, shaped like ``inputs`` except for the window's (h, w).
    """
    x = np.asarray(inputs, dtype=np.float32)
    batch = x.reshape((-1, *x.shape[-3:]) if x.ndim >= 3 else (1, 1, *x.shape))
    case = pool([measure_slice(batch[i]) for i in spread_indices(len(batch), at_most)])
    out = for_case(case, fingerprint, intensity, fov).apply(batch)
    return out.reshape((*x.shape[:-2], *out.shape[-2:]))
