"""A fine-tuned prompted SAM checkpoint (``model.arch: prompted_sam``) behind the prompted
predictor interface, so the comparison runs it with every prompt strategy (oracle boxes and
points, mean-mask fixed points, drafts of another model, correction clicks)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..data import resize_to
from ..prompts import Prompts
from ..models.prompted_sam import PromptedSam
from ..weights import CheckpointError, CheckpointNotFoundError
from .predictor_base import PromptedPredictor


class FineTunedPredictor(PromptedPredictor):
    """A ``prompted_sam`` checkpoint as a :class:`PromptedPredictor`.

    The image is resized to the checkpoint's square ``data.image_size`` as in training (no
    aspect kept, so a mask prompt's frame is the default one); prompts are moved into that
    frame. The decoder returns one mask per object (it was fine-tuned that way), whatever the
    number of points. Logits are shifted by the logit of the checkpoint's validation-tuned
    threshold, so ``probability >= 0.5`` is the model's own tuned cut-off.

    Args:
        checkpoint: a ``best.pt`` of a ``prompted_sam`` run.
        device: torch device.

    Raises:
        CheckpointNotFoundError: no checkpoint given, or not on disk.
        CheckpointError: not an s2unet checkpoint, or one of another architecture.
    """

    name = "finetuned"

    def __init__(self, checkpoint: Optional[str] = None, device: str = "cpu") -> None:
        super().__init__()
        from ..models.checkpoint import load_model_checkpoint

        if checkpoint is None or not Path(checkpoint).is_file():
            raise CheckpointNotFoundError(f"the finetuned predictor needs the best.pt of a prompted_sam run "
                                          f"(weights: ...); {checkpoint or 'none given'} is not a file")
        loaded = load_model_checkpoint(checkpoint, device)
        if not isinstance(loaded.model, PromptedSam):
            raise CheckpointError(f"{checkpoint} is a model.arch {loaded.config.model.arch} checkpoint, "
                                  "not prompted_sam")
        self.trainable_parameters = int(loaded.model.parameter_counts()["trainable"])
        loaded.model.merge_lora()
        self.model, self.device = loaded.model.eval(), torch.device(device)
        self.size = loaded.config.data.image_size
        # the threshold is a calibrated probability: its cut on this model's own logits
        self.logit_shift = loaded.calibration.logit_cut(loaded.threshold)
        self._embedding: Optional[tuple[torch.Tensor, list[torch.Tensor]]] = None
        self.low_res_size = self._low_res_side()

    def _low_res_side(self) -> int:
        """The decoder's output side at this input size (4 x the embedding's)."""
        return int(self.model.prompt_encoder.mask_input_size[0])

    @torch.inference_mode()
    def _embed(self, image: np.ndarray) -> None:
        x = resize_to(image.transpose(2, 0, 1), self.size, "bilinear").clamp_(0.0, 1.0)[None].to(self.device)
        self._embedding = self.model.embed(x)

    @torch.inference_mode()
    def _predict(self, boxes, points, labels, mask_input, multimask):  # noqa: D102 (see base)
        assert self._embedding is not None and self._hw is not None
        embedding, high_res = self._embedding
        frame = Prompts(boxes, points, labels, False).rescaled(self._hw, (self.size, self.size))
        logits, lows = [], []
        for k in range(len(boxes) if boxes is not None else len(points)):
            one = Prompts(None if frame.boxes is None else frame.boxes[k : k + 1],
                          None if frame.points is None else frame.points[k : k + 1],
                          None if frame.labels is None else frame.labels[k : k + 1], False)
            prev = None if mask_input is None else torch.from_numpy(mask_input[k : k + 1]).to(self.device)
            low = self.model.decode(embedding, high_res, one, prev)
            full = F.interpolate(low, size=(self.size, self.size), mode="bilinear", align_corners=False)
            logits.append(F.interpolate(full, size=self._hw, mode="bilinear", align_corners=False)[:, 0])
            lows.append(low)
        return ((torch.cat(logits) - self.logit_shift).cpu().numpy(), torch.cat(lows).cpu().numpy())
