"""Encoder registry: ``create_encoder(name, weights)`` returns a frozen 4-scale feature encoder.

Each registry entry (:class:`EncoderSpec`) is the one source of truth about an encoder: its
architecture arguments, its published checkpoint (file name, sha256, URL), its input
normalisation and its default image size. Adding an encoder family is one new module here that
calls ``register_encoder`` plus its import below.
"""
from __future__ import annotations

from .base import (
    IMAGENET_MEAN, IMAGENET_STD, AdapterSite, Encoder, EncoderSpec, encoder_names, get_encoder_spec, register_encoder,
)
from . import hiera, tinyvit  # noqa: F401  (registers the encoders)
from ...weights import load_state_strictly, read_encoder_checkpoint


def create_encoder(name: str, weights: str = "default") -> Encoder:
    """Build a registered encoder and load its weights.

    Args:
        name: a registered encoder name (see ``encoder_names()``).
        weights: ``"default"`` (the encoder's official checkpoint, looked up in the weights
            directories), ``"random"`` (explicit random initialisation) or a checkpoint path.

    Returns:
        The encoder with every parameter frozen (``requires_grad=False``).
    """
    spec = get_encoder_spec(name)
    encoder = spec.build(**spec.kwargs, mean=spec.mean, std=spec.std)
    if weights != "random":
        path, checkpoint = read_encoder_checkpoint(spec, weights)
        load_encoder_state(encoder, spec, checkpoint, path.name)
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder


def load_encoder_state(encoder: Encoder, spec: EncoderSpec, checkpoint: dict, source: str) -> None:
    """Load an encoder's tensors out of a read checkpoint file, strictly.

    Args:
        encoder: the built encoder.
        spec: its registry entry.
        checkpoint: what the file holds (:func:`~s2unet.weights.read_encoder_checkpoint`).
        source: the file name, for messages.

    Raises:
        CheckpointError: the file's tensors do not fit the encoder.
    """
    load_state_strictly(encoder, encoder.select_weights(checkpoint, source), source, spec.name)


__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "AdapterSite", "Encoder", "EncoderSpec", "create_encoder", "encoder_names", "load_encoder_state",
    "get_encoder_spec", "register_encoder",
]
