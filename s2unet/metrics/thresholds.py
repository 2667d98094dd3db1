"""Dice at many binarisation thresholds in one pass, for choosing the threshold on validation data."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .scores import as_mask, empty_safe_ratio, to_numpy


def dice_for_thresholds(prob: Any, gt: Any, thresholds: Sequence[float], per_item: bool = False) -> np.ndarray:
    """Dice at many thresholds in one pass (for choosing the threshold on validation data).

    Each pixel is binned once by how many thresholds it reaches; cumulative histograms then give
    the predicted-positive and true-positive counts at every threshold, so the cost barely
    grows with the number of thresholds.

    Args:
        prob: probabilities, any shape (torch tensors accepted).
        gt: binary reference, same shape.
        thresholds: the candidate thresholds (any order); foreground is ``prob >= t``.
        per_item: treat axis 0 as items (images or cases) and return one Dice per item.

    Returns:
        (T,) Dice of the whole array per threshold, or (N, T) per item when ``per_item``; the
        both-empty rule gives 1. The mean over items of the per-item Dice matches the case
        mean that ``summarize`` reports.
    """
    p = to_numpy(prob).astype(np.float32, copy=False)
    g = as_mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"probability shape {p.shape} differs from ground truth shape {g.shape}")
    thr = np.asarray(thresholds, dtype=np.float32).ravel()
    order = np.argsort(thr)
    n_items = p.shape[0] if per_item else 1
    p, g = p.reshape(n_items, -1), g.reshape(n_items, -1)
    n_bins = thr.size + 1
    # bin b = number of thresholds <= p, so the pixel is positive for the sorted thresholds j < b
    bins = np.searchsorted(thr[order], p, side="right") + n_bins * np.arange(n_items)[:, None]
    hist_all = np.bincount(bins.ravel(), minlength=n_items * n_bins).reshape(n_items, n_bins)
    hist_tp = np.bincount(bins[g], minlength=n_items * n_bins).reshape(n_items, n_bins)
    pred_pos = np.cumsum(hist_all[:, ::-1], axis=1)[:, ::-1][:, 1:]
    tp = np.cumsum(hist_tp[:, ::-1], axis=1)[:, ::-1][:, 1:]
    gt_pos = g.sum(axis=1, keepdims=True)
    dice_sorted = empty_safe_ratio(2 * tp, pred_pos + gt_pos)
    dice = np.empty_like(dice_sorted)
    dice[:, order] = dice_sorted
    return dice if per_item else dice[0]


FLAT_WINDOW = 0.1  # the drift of the operating point a threshold should survive (another scanner)


def _window(thresholds: np.ndarray, centre: float, window: float) -> np.ndarray:
    """Which thresholds lie within ``window`` of ``centre`` (the grid is rounded to 0.01)."""
    return np.abs(thresholds - centre) <= window + 1e-6


def threshold_flatness(thresholds: Sequence[float], dice: Sequence[float], threshold: float,
                       window: float = FLAT_WINDOW) -> float:
    """How much the Dice changes around a threshold: its range (max - min) over ``threshold ± window``.

    0 is a plateau; a value near the Dice itself means the score hangs on a knife's edge.
    """
    thr, d = np.asarray(thresholds, dtype=np.float64), np.asarray(dice, dtype=np.float64)
    near = d[_window(thr, threshold, window)]
    return float(near.max() - near.min())


def flat_threshold(thresholds: Sequence[float], dice: Sequence[float], window: float = FLAT_WINDOW
                   ) -> tuple[float, float]:
    """The threshold whose neighbourhood scores best: the maximum of the Dice averaged over
    ``threshold ± window`` (the grid points inside it; fewer at the grid's ends).

    The smoothed Dice is the expected score when the operating point drifts anywhere within the
    window, as it does when another hospital's scans shift the probabilities: a sharp, isolated
    peak is discounted by its low neighbours, a plateau is not. Of equal smoothed scores (a
    plateau wider than the window) the middle one is taken, the plateau's centre.

    Args:
        thresholds: the candidate thresholds.
        dice: the Dice at each of them (e.g. from :func:`dice_for_thresholds`).
        window: the half-width of the neighbourhood.

    Returns:
        ``(threshold, flatness)``, the flatness as :func:`threshold_flatness` gives it.
    """
    thr, d = np.asarray(thresholds, dtype=np.float64), np.asarray(dice, dtype=np.float64)
    order = np.argsort(thr)
    thr, d = thr[order], d[order]
    smoothed = np.array([d[_window(thr, t, window)].mean() for t in thr])
    tied = np.flatnonzero(smoothed >= smoothed.max() - 1e-9)
    best = float(thr[tied[len(tied) // 2]])
    return best, threshold_flatness(thr, d, best, window)
