"""Zero-shot prompted SAM-family predictors behind one interface, and their registry.

Adding a predictor: a :class:`PromptedPredictor` subclass in its own file plus one line in
:data:`PREDICTORS`. The models:

* ``litemedsam`` / ``mobilesam``: SAM1-layout checkpoints (TinyViT image encoder + neck, SAM
  prompt encoder and mask decoder). The encoder is ours (:mod:`s2unet.models.encoders.tinyvit`);
  the neck, prompt encoder, two-way transformer and mask decoder are the ``sam2`` package's
  own modules configured the SAM1 way (no high-resolution features, no object-score token,
  IoU head without sigmoid). Their tensors load strictly from the SAM1 keys; the only
  renaming is the transformer MLP (SAM1 ``mlp.lin1/lin2`` = sam2 ``mlp.layers.0/1``).
* ``sam2*`` / ``sam2.1*``: the ``sam2`` package's ``SAM2ImagePredictor`` on an official
  checkpoint (not downloadable on these machines: building raises
  :class:`~s2unet.weights.CheckpointNotFoundError`).
* ``finetuned``: a ``best.pt`` of a ``prompted_sam`` run (:mod:`.finetuned_predictor`).

Every predictor embeds an image once (``set_image``) and then answers any number of prompts
(``predict``), which iterative correction needs.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

from ..io import did_you_mean
from .predictor_base import MASK_PROMPT_LOGIT, PromptedPredictor, as_rgb01
from .sam1_predictor import (
    LITEMEDSAM,
    MOBILESAM,
    SamFrame,
    SamHead,
    SamTinyViTPredictor,
    SamVariant,
    sam1_postprocess,
    sam1_preprocess,
)
from .finetuned_predictor import FineTunedPredictor
from .sam2_predictor import SAM2_CONFIGS, SAM2Predictor, sam2_config_name

PREDICTORS: dict[str, Callable[..., PromptedPredictor]] = {
    "litemedsam": partial(SamTinyViTPredictor, LITEMEDSAM),
    "mobilesam": partial(SamTinyViTPredictor, MOBILESAM),
    **{name: partial(SAM2Predictor, name) for name in SAM2_CONFIGS},
    # A model fine-tuned by this project (model.arch: prompted_sam); its best.pt is the checkpoint.
    FineTunedPredictor.name: FineTunedPredictor,
}


def predictor_names() -> list[str]:
    """Names :func:`create_predictor` accepts."""
    return list(PREDICTORS)


def create_predictor(
    name: str, checkpoint: Optional[str | Path] = None, device: str = "cpu", **options: Any
) -> PromptedPredictor:
    """Build a zero-shot prompted predictor by name.

    Args:
        name: one of :func:`predictor_names` (``litemedsam``, ``mobilesam``,
            ``sam2.1_hiera_tiny``...).
        checkpoint: a checkpoint file instead of the default one.
        device: torch device.
        **options: predictor-specific options (SAM2: ``image_size``).

    Returns:
        The predictor, weights loaded and frozen.

    Raises:
        KeyError: an unknown name.
        CheckpointNotFoundError: the checkpoint is not on disk.
        CheckpointError: the checkpoint does not fit.
    """
    if name not in PREDICTORS:
        close = did_you_mean(name, PREDICTORS)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise KeyError(f"unknown prompted predictor {name!r}{hint}; known: {', '.join(PREDICTORS)}")
    return PREDICTORS[name](checkpoint=str(checkpoint) if checkpoint is not None else None, device=device, **options)


__all__ = [
    "LITEMEDSAM", "MASK_PROMPT_LOGIT", "MOBILESAM", "PREDICTORS", "PromptedPredictor", "SAM2Predictor", "SamFrame",
    "SamHead", "SamTinyViTPredictor", "SamVariant", "as_rgb01", "create_predictor", "predictor_names",
    "sam1_postprocess", "sam1_preprocess", "sam2_config_name",
]
