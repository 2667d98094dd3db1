"""Official SAM2 / SAM2.1 image models through the ``sam2`` package's own predictor (official
checkpoints are not downloadable on these machines: building one raises
:class:`~s2unet.weights.CheckpointNotFoundError`)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..models.encoders.hiera import OFFICIAL_SAM2
from ..weights import resolve_checkpoint
from .predictor_base import PromptedPredictor

# Official key (``sam2.1_hiera_tiny``...) -> the sam2 package's config, from the encoder registry.
SAM2_CONFIGS = {name: config for name, config, *_ in OFFICIAL_SAM2}


def sam2_config_name(key: str) -> str:
    """The ``sam2`` package's Hydra config for a checkpoint key such as ``sam2.1_hiera_tiny``."""
    if key not in SAM2_CONFIGS:
        raise KeyError(f"not an official SAM2 checkpoint key: {key!r}")
    return SAM2_CONFIGS[key]


class SAM2Predictor(PromptedPredictor):
    """An official SAM2 / SAM2.1 image model through the ``sam2`` package's own predictor.

    Args:
        key: ``sam2[.1]_hiera_{tiny,small,base_plus,large}``.
        checkpoint: a checkpoint path; the official file looked up in the weights folders
            when None.
        device: torch device.
        image_size: run at another square input size than the config's 1024 (a multiple of
            32; for checkpoints fine-tuned at another size, e.g. 512, or quick tests).

    Raises:
        CheckpointNotFoundError: the checkpoint is not on disk.
    """

    def __init__(
        self, key: str, checkpoint: Optional[str] = None, device: str = "cpu", image_size: Optional[int] = None
    ) -> None:
        super().__init__()
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.name = key
        config = sam2_config_name(key)
        path = resolve_checkpoint(checkpoint or key)
        overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
        model = build_sam2(config, str(path), device=device, mode="eval", hydra_overrides_extra=overrides)
        self.predictor = SAM2ImagePredictor(model)
        if image_size:
            # SAM2ImagePredictor hard-codes the backbone map sizes of a 1024 input (strides 4,
            # 8, 16); nothing public sets them, so they follow the model's size here.
            side = int(image_size)
            self.predictor._bb_feat_sizes = [(side // s, side // s) for s in (4, 8, 16)]
        self.low_res_size = model.image_size // 4

    def _embed(self, image: np.ndarray) -> None:
        # SAM2ImagePredictor documents 0..255 HWC input (its ToTensor scales uint8 to 0..1).
        with torch.inference_mode():
            self.predictor.set_image(np.round(image * 255.0).astype(np.uint8))

    def _predict(self, boxes, points, labels, mask_input, multimask):  # noqa: D102 (see base)
        with torch.inference_mode():
            masks, iou, low = self.predictor.predict(
                point_coords=points, point_labels=labels, box=boxes, mask_input=mask_input,
                multimask_output=multimask, return_logits=True,
            )
        if masks.ndim == 3:  # the predictor squeezes a single object away
            masks, iou, low = masks[None], iou[None], low[None]
        best = iou.argmax(axis=1)
        k = np.arange(len(masks))
        return masks[k, best], low[k, best][:, None]
