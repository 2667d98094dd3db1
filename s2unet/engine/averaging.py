"""A moving average of the trained weights (``train.ema``), the model that is validated and saved.

Averaging the weights along the last steps of training finds flatter solutions that transfer
better to data unlike the training set (SWA, Izmailov et al. 2018; SWAD, Cha et al. 2021). The
average is torch's :class:`~torch.optim.swa_utils.AveragedModel` with an exponential decay that
starts low, as in timm's ``ModelEmaV3``, so that a short run is not dominated by its random
start: after ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from ..models import SegmentationModel


def warmed_decay(decay: float, n_averaged: int) -> float:
    """The decay used for an update after ``n_averaged`` earlier ones."""
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


class WeightAverage:
    """The exponential moving average of a model's weights and BatchNorm statistics.

    Args:
        model: the model being trained (not its DDP / compiled wrapper).
        decay: the largest decay, in (0, 1); the average spans about ``1 / (1 - decay)`` steps.
    """

    def __init__(self, model: SegmentationModel, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be in (0, 1), got {decay}")

        def avg_fn(average: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
            if not average.is_floating_point():  # counters such as BatchNorm's num_batches_tracked
                return current
            return torch.lerp(current, average, warmed_decay(decay, int(n_averaged)))

        # The buffers (BatchNorm running statistics) are averaged with the weights, so the
        # average is a model whose statistics belong to its weights.
        self._average = AveragedModel(model, avg_fn=avg_fn, use_buffers=True)
        self._average.eval()

    @property
    def model(self) -> SegmentationModel:
        """The averaged model (validate and save this one)."""
        return self._average.module  # type: ignore[return-value]

    def update(self, model: SegmentationModel) -> None:
        """Fold the model's current weights into the average (after each optimiser step)."""
        self._average.update_parameters(model)

    def state(self) -> dict[str, Any]:
        """What ``last.pt`` keeps so that a resumed run continues the same average."""
        return {"state_dict": self.model.trained_state_dict(), "n_averaged": int(self._average.n_averaged)}

    def load_state(self, state: dict[str, Any], source: str) -> None:
        """Restore :meth:`state`.

        Raises:
            CheckpointError: the stored tensors do not fit the model (names ``source``).
        """
        self.model.load_trained_state_dict(state["state_dict"], source=source)
        self._average.n_averaged.fill_(int(state["n_averaged"]))
