"""Models: ``create_model(cfg)`` builds the architecture a config describes.

``s2unet`` is the frozen encoder + adapters + attention-gated decoder; ``unet`` and
``deeplabv3plus`` are CNN baselines trained by the same engine with the same data and losses.
"""
from __future__ import annotations

from ..config import Config, ConfigError
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


def check_model_config(cfg: Config) -> None:
    """Check the model section against the encoder registry before data is read or anything built.

    The encoder must be registered, ``data.image_size`` a multiple of its stride (from the
    registry's spec: nothing is built) and its checkpoint present unless random weights are
    asked for. CNN baselines pad any size and have no encoder checkpoint.

    Raises:
        ConfigError: an unknown encoder or an image size the encoder cannot take, naming the key.
        CheckpointNotFoundError: with download instructions.
    """
    from ..weights import resolve_checkpoint
    from .encoders import get_encoder_spec

    if cfg.model.arch != "s2unet":
        return
    try:
        spec = get_encoder_spec(cfg.model.encoder)
    except KeyError as exc:
        raise ConfigError(f"model.encoder: {exc.args[0]}") from None
    size, stride = cfg.data.image_size, spec.stride
    if size % stride:
        nearest = [m for m in (size // stride * stride, (size // stride + 1) * stride) if m > 0]
        raise ConfigError(
            f"data.image_size {size} is not a multiple of {stride}, the input stride of encoder {spec.name}; "
            f"use {' or '.join(map(str, nearest))}"
        )
    if cfg.model.weights != "random":
        resolve_checkpoint(spec.weights if cfg.model.weights == "default" else cfg.model.weights)


__all__ = ["S2UNet", "SegmentationModel", "check_model_config", "create_encoder", "create_model", "encoder_names"]
