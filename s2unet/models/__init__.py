"""Models: ``create_model(cfg)`` builds the architecture a config describes.

``s2unet`` is the frozen encoder + adapters + attention-gated decoder; ``unet`` and
``deeplabv3plus`` are CNN baselines trained by the same engine with the same data and losses.
"""
from __future__ import annotations

from ..config import Config
from .base import SegmentationModel
from .encoders import create_encoder, encoder_names
from .s2unet import S2UNet


def create_model(cfg: Config) -> SegmentationModel:
    """Build the model a config describes, loading pretrained weights where it names them.

    Args:
        cfg: the run config (``model.arch`` and its options, ``cfg.out_channels``).

    Returns:
        The model; for s2unet only adapters, attention LoRA, decoder and heads require
        gradients unless ``model.train_encoder`` is set.
    """
    if cfg.model.arch == "s2unet":
        return S2UNet(create_encoder(cfg.model.encoder, cfg.model.weights), cfg)
    from .cnn import create_cnn

    return create_cnn(cfg)


def check_weights_available(cfg: Config) -> None:
    """Fail fast, before data is read, when the encoder checkpoint a config needs is missing.

    Raises:
        CheckpointNotFoundError: with download instructions.
    """
    from ..weights import resolve_checkpoint
    from .encoders import get_encoder_spec

    if cfg.model.arch != "s2unet" or cfg.model.weights == "random":
        return
    spec = get_encoder_spec(cfg.model.encoder)
    resolve_checkpoint(spec.weights if cfg.model.weights == "default" else cfg.model.weights)


__all__ = ["S2UNet", "SegmentationModel", "check_weights_available", "create_encoder", "create_model", "encoder_names"]
