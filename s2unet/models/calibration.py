"""Calibration of a model's output: temperature scaling, ``activation(logit / T + b)``.

Fitted on the validation cases (:func:`s2unet.metrics.fit_calibration`), stored in the model
checkpoint under ``calibration`` and applied by :class:`s2unet.predict.Predictor` before the
activation, so every probability the toolkit writes or thresholds (infer.py, validation,
compare, the label app) is calibrated. A checkpoint written before calibration existed has no
``calibration`` entry and is read as the identity (T 1, b 0): it predicts exactly as before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ..weights import CheckpointError


@dataclass(frozen=True)
class Calibration:
    """``logit / temperature + bias`` ahead of the activation.

    Attributes:
        temperature: T > 0; T > 1 softens over-confident probabilities.
        bias: b, added after the division (0 when only the temperature is fitted).
        fitted: False for the identity of a checkpoint without calibration (or a validation
            set it could not be fitted on, see ``note``).
        note: why it is the identity, or on how many pixels it was fitted.
    """

    temperature: float = 1.0
    bias: float = 0.0
    fitted: bool = False
    note: str = "no calibration stored (a checkpoint written before calibration): T 1"

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """The calibrated logits (the input itself for the identity, so old checkpoints are unchanged)."""
        if self.temperature == 1.0 and self.bias == 0.0:
            return logits
        return logits / self.temperature + self.bias

    def calibrate_probabilities(self, prob: np.ndarray) -> np.ndarray:
        """Calibrated sigmoid probabilities from uncalibrated ones (validation's own predictions).

        The logit is recovered from float32 probabilities, clipped where they round to 0 or 1
        (|logit| about 16), which moves no pixel across any threshold of the tuning grid.
        """
        p = torch.from_numpy(np.asarray(prob, dtype=np.float32))
        return torch.sigmoid(self.apply(torch.logit(p.double(), eps=1e-7))).float().numpy()

    def logit_cut(self, threshold: float) -> float:
        """The uncalibrated logit at which the calibrated sigmoid probability equals ``threshold``."""
        t = min(max(float(threshold), 1e-6), 1 - 1e-6)
        return self.temperature * (math.log(t / (1 - t)) - self.bias)

    def describe(self) -> str:
        """One line for the console: the temperature, or why there is none."""
        if not self.fitted:
            return self.note
        return f"temperature {self.temperature:.3g}" + (f", bias {self.bias:+.3g}" if self.bias else "") + f" ({self.note})"

    def to_payload(self) -> dict[str, Any]:
        """The checkpoint's ``calibration`` entry (builtins only)."""
        return {"method": "temperature", "temperature": float(self.temperature), "bias": float(self.bias),
                "fitted": bool(self.fitted), "note": self.note}

    @classmethod
    def from_payload(cls, payload: Optional[dict[str, Any]], source: str) -> "Calibration":
        """Read a checkpoint's ``calibration`` entry (absent: the identity).

        Raises:
            CheckpointError: an entry that is not a finite temperature > 0 and a finite bias.
        """
        if payload is None:
            return cls()
        try:
            temperature, bias = float(payload["temperature"]), float(payload.get("bias", 0.0))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{source}: its calibration entry {payload!r} has no numeric temperature") from None
        if not (math.isfinite(temperature) and temperature > 0 and math.isfinite(bias)):
            raise CheckpointError(f"{source}: calibration temperature {temperature} / bias {bias} is not a finite "
                                  "temperature > 0 and a finite bias")
        return cls(temperature, bias, bool(payload.get("fitted", True)), str(payload.get("note", "")))
