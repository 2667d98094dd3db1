"""Is the threshold out of its depth? The run's threshold line and the empty-slices warning.

A threshold chosen on validation can sit above every probability the model gives another
hospital's scans: the masks come out empty although the model clearly responds. The check
compares, per slice, the peak probability with the threshold and with 0.5, and warns when
most slices are empty at the threshold and at least half of those would have foreground at 0.5.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..metrics import FLAT_WINDOW
from ..models.checkpoint import LoadedModel

REFERENCE = 0.5  # the threshold a sigmoid's own decision boundary gives
MOST = 0.5  # "most slices": more than this share empty
ADVICE = ("try --threshold 0.5, and adapt the model to these scans with a few labelled slices "
          "(README \"Another hospital's scans\", docs/cross_source.md)")


def slice_peaks(prob: np.ndarray, slice_axis: Optional[int]) -> np.ndarray:
    """The highest foreground probability of each slice: (n_slices,), or (1,) for a 2D picture.

    Args:
        prob: (C, *spatial) sigmoid probabilities.
        slice_axis: the spatial slice axis of a volume, None for a picture.
    """
    if slice_axis is None:
        return np.array([prob.max()])
    return np.moveaxis(prob, slice_axis + 1, 0).reshape(prob.shape[slice_axis + 1], -1).max(axis=1)


def empty_slices_warning(case: str, peaks: np.ndarray, threshold: float) -> Optional[dict[str, Any]]:
    """The warning for a case whose threshold empties most slices that 0.5 would fill, else None.

    Args:
        case: the case (or group of pictures) named in the warning.
        peaks: per slice, its highest probability (:func:`slice_peaks`).
        threshold: the run's threshold (foreground is ``prob >= threshold``).

    Returns:
        ``{"case", "threshold", "slices", "empty_share", "empty_share_at_0.5", "message"}``.
    """
    empty, empty_ref = peaks < threshold, peaks < REFERENCE
    lost = int((empty & ~empty_ref).sum())
    if empty.mean() <= MOST or lost < empty.sum() / 2:
        return None
    message = (f"WARNING: {case}: threshold {threshold:.2f} leaves {empty.mean():.0%} of its {peaks.size} slice(s) "
               f"empty, at {REFERENCE} {empty_ref.mean():.0%} would be: the model responds where the mask is empty, "
               f"so these scans likely differ from its training data and its Dice will be lower; {ADVICE}")
    return {"case": case, "threshold": threshold, "slices": int(peaks.size), "empty_share": float(empty.mean()),
            f"empty_share_at_{REFERENCE}": float(empty_ref.mean()), "message": message}


def threshold_line(loaded: LoadedModel, threshold: float) -> str:
    """What the run thresholds at, how flat the validation Dice was there, and the calibration."""
    if threshold != loaded.threshold:
        origin = f"from --threshold (the checkpoint's is {loaded.threshold:.2f})"
    else:
        flatness = loaded.metrics.get("threshold_flatness")
        origin = ("from the checkpoint, no flatness recorded (written before it)" if flatness is None else
                  f"from the checkpoint, validation Dice range {flatness:.3f} over +-{FLAT_WINDOW:g} around it")
    return f"threshold {threshold:.2f} {origin}; calibration: {loaded.calibration.describe()}"
