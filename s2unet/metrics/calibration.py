"""Fitting the temperature (and optionally a bias) of :class:`~s2unet.models.calibration.Calibration`
on validation pixels by minimising their binary cross-entropy (pixel NLL).

Sigmoid outputs only (binary and multilabel tasks): a softmax's argmax does not depend on a
temperature, so multiclass models keep the identity.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import minimize

from ..models.calibration import Calibration

MAX_PIXELS = 200_000  # a uniform sample this large fixes T to about 1 %, in well under a second
_LOG_T_BOUNDS = (np.log(0.01), np.log(100.0))  # separable pixels would drive T to 0


def sample_pixels(probs: Sequence[np.ndarray], targets: Sequence[np.ndarray], max_pixels: int = MAX_PIXELS,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A uniform, reproducible sample of pixels over all cases, as uncalibrated logits.

    Args:
        probs: per case, uncalibrated sigmoid probabilities (any shape).
        targets: per case, the binary reference of the same shape.
        max_pixels: sample size (all pixels when there are fewer).
        seed: the sample's seed.

    Returns:
        ``(logits float64 (N,), targets bool (N,))``.
    """
    sizes = np.array([p.size for p in probs])
    total = int(sizes.sum())
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(total, size=min(max_pixels, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    case = np.searchsorted(starts, picked, side="right") - 1
    p = np.concatenate([np.asarray(probs[c]).ravel()[picked[case == c] - starts[c]] for c in range(len(probs))])
    y = np.concatenate([np.asarray(targets[c]).ravel()[picked[case == c] - starts[c]] for c in range(len(probs))])
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p), y.astype(bool)


def fit_calibration(logits: np.ndarray, targets: np.ndarray, bias: bool = False) -> Calibration:
    """The temperature (and bias) minimising the mean BCE of ``sigmoid(logits / T + b)``.

    Args:
        logits: (N,) uncalibrated logits.
        targets: (N,) binary reference.
        bias: also fit b (Platt scaling); off by default, because b learns the foreground share
            of the validation cases, which differs between hospitals and lesion sizes.

    Returns:
        The fitted Calibration; the identity (``fitted`` False, with the reason) when the
        pixels hold only one class, where the NLL has no finite minimum.
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(targets, dtype=bool).ravel().astype(np.float64)
    if z.size == 0 or y.min() == y.max():
        return Calibration(note="not fitted: the validation pixels hold only one class; T 1")

    def nll(params: np.ndarray) -> tuple[float, np.ndarray]:
        inv_t = np.exp(-params[0])
        s = z * inv_t + (params[1] if bias else 0.0)
        residual = 1.0 / (1.0 + np.exp(-s)) - y  # d NLL / d s
        value = float(np.mean(np.logaddexp(0.0, s) - y * s))
        grad = [float(np.mean(residual * -z * inv_t)), float(np.mean(residual)) if bias else 0.0]
        return value, np.array(grad)

    result = minimize(nll, np.zeros(2), jac=True, method="L-BFGS-B",
                      bounds=[_LOG_T_BOUNDS, (None, None) if bias else (0.0, 0.0)])
    return Calibration(float(np.exp(result.x[0])), float(result.x[1]) if bias else 0.0, True,
                       f"fitted on {z.size} validation pixels")
