"""What the engine and inference expect of every trainable segmentation model."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from ..weights import load_state_strictly


class SegmentationModel(nn.Module):
    """A model mapping (B, 3, H, W) images in 0..1 to a list of logit maps, the last final.

    Subclasses implement ``forward``; the defaults below suit models trained end to end.
    """

    # True when the training forward takes the reference masks too (``model(x, target)``:
    # prompted models draw their prompts from them).
    trains_with_target = False

    def prepare(self, train_set: Dataset) -> None:
        """Fit what the model derives from the training data before the first step of a new
        run (nothing by default).

        Args:
            train_set: the engine's training dataset.
        """

    def score_notes(self) -> list[str]:
        """What a reader of this model's validation scores must know (none by default)."""
        return []

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The final prediction's logits (B, C, H, W)."""
        return self(x)[-1]

    def parameter_counts(self) -> dict[str, int | float]:
        """Trainable and total parameter counts (and the trainable share in percent)."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "total": total, "trainable_percent": round(100.0 * trainable / total, 3)}

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint must hold to rebuild the trained model."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_trained_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Load what ``trained_state_dict`` saved; keys and shapes must match exactly.

        Raises:
            CheckpointError: the tensors do not fit this model (names ``source``).
        """
        load_state_strictly(self, state, source, "this model", self.trained_state_dict())

    def merge_lora(self) -> int:
        """Fold LoRA into base weights for inference; models without LoRA merge nothing."""
        return 0
