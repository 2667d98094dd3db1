"""One case through a trained checkpoint, as ``infer.py`` and the Python API (:mod:`s2unet.api`)
both run it: the outputs' config (post-processing changes, text phrases), the Predictor, the
probabilities of a picture or a volume, and the label arrays written for them."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from ..config import Config
from ..config.text import names_a_side
from ..config import validate as validate_config
from ..data import CaseImage, DataError
from ..models.checkpoint import LoadedModel
from ..predict import Predictor, channel_names
from ..predict.predictor import Progress
from ..text import ResolvedPhrases
from .text_queries import text_queries



def output_config(loaded: LoadedModel, keep_largest: Optional[Sequence[int]] = None, fill_holes: bool = False,
                  text: Optional[Sequence[str]] = None) -> tuple[Config, Optional[ResolvedPhrases]]:
    """The config of a checkpoint's outputs and, for a text-prompted one, the phrases asked.

    Args:
        loaded: the checkpoint.
        keep_largest: replaces its ``postprocess.keep_largest``.
        fill_holes: fill holes even if the checkpoint does not.
        text: phrases (see :func:`~.text_queries.text_queries`; None: every known structure).

    Raises:
        DataError: phrases for a model that takes none, two phrases with one output name.
        UnknownPhraseError: a phrase too far from every trained structure.
    """
    cfg = loaded.config
    if keep_largest is not None or fill_holes:
        post = dataclasses.replace(cfg.postprocess, fill_holes=cfg.postprocess.fill_holes or fill_holes,
                                   keep_largest=cfg.postprocess.keep_largest if keep_largest is None else list(keep_largest))
        cfg = validate_config(dataclasses.replace(cfg, postprocess=post))
    return text_queries(loaded, cfg, text)


def check_flip_symmetric(cfg: Config) -> None:
    """Refuse flip test-time augmentation for a model with left/right labels.

    A flipped image shows the left structure where the right one was; a model that tells them
    apart by position answers with the wrong label, and flipping back puts it on the wrong side.
    """
    sided = [n for n in channel_names(cfg) if names_a_side(n)]
    if sided:
        raise DataError(
            f"--tta averages with a horizontally flipped prediction, which swaps left and right; "
            f"this model has sided labels ({', '.join(sided)}): run it without --tta"
        )


def make_predictor(loaded: LoadedModel, cfg: Config, phrases: Optional[ResolvedPhrases], device: Any,
                   threshold: Optional[float] = None, batch_size: int = 8, tta: bool = False,
                   apply_postprocess: bool = True, precision: str = "auto") -> Predictor:
    """The Predictor of a checkpoint for the outputs of :func:`output_config`.

    Args:
        loaded: the checkpoint.
        cfg, phrases: from :func:`output_config`.
        device: a torch device.
        threshold: the binarisation threshold; None: the one tuned in training.
        batch_size: slices per forward pass.
        tta: average with the horizontally flipped prediction.
        apply_postprocess: apply the config's ``postprocess`` section.
        precision: ``auto``, ``fp32`` or ``bf16`` (:mod:`s2unet.predict.precision`).
    """
    return Predictor(loaded.model, cfg, device, loaded.threshold if threshold is None else float(threshold),
                     batch_size, tta, apply_postprocess=apply_postprocess,
                     text=None if phrases is None else phrases.embeddings, calibration=loaded.calibration,
                     precision=precision)


def case_probabilities(predictor: Predictor, case: CaseImage, array: np.ndarray,
                       progress: Optional[Progress] = None) -> tuple[np.ndarray, Optional[int]]:
    """Probabilities of one decoded case in its served orientation.

    Args:
        predictor: the model.
        case: the case (a picture or a volume).
        array: a picture's (H, W) pixels or the volume's served array (``case.get_array()``).
        progress: called with the slices done (volumes).

    Returns:
        ``(prob (C, *spatial), slice_axis)``; the slice axis is None for a picture.
    """
    if case.planar:
        return predictor.predict_picture(case), None
    return predictor.predict_volume(array, progress), predictor.cfg.data.axis


def label_arrays(fg: np.ndarray, task: str) -> list[np.ndarray]:
    """The uint8 arrays written for a prediction: one 0/1 array per label (multilabel), else one
    label map (binary 0/1; multiclass the class index of the exclusive one-hot channels)."""
    if task == "multilabel":
        return [m.astype(np.uint8) for m in fg]
    return [np.einsum("c...,c->...", fg.astype(np.uint8), np.arange(1, len(fg) + 1, dtype=np.uint8))]
