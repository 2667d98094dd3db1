"""Models: ``create_model(...)`` builds an architecture from explicit arguments;
``create_model_from_config(cfg)`` takes them from a run config (:func:`model_args`).

``s2unet`` is the frozen encoder + adapters + attention-gated decoder; ``unet`` and
``deeplabv3plus`` are CNN baselines trained by the same engine with the same data and losses;
``prompted_sam`` fine-tunes a prompted SAM-family model (:mod:`.prompted_sam`).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal, Mapping, Optional, Sequence, TypeVar, Union

from ..config import AdapterConfig, AttentionLoraConfig, Config, ConfigError, PromptedConfig, check_registered
from .archs import Architecture, ModelArgs, get_architecture, register_architecture
from .base import SegmentationModel
from .encoders import create_encoder, encoder_names
from .s2unet import S2UNet
from ..text.embedders import TEXT_MODELS, locate_text_model

if TYPE_CHECKING:
    from .encoders.base import EncoderSpec

_Section = TypeVar("_Section", AdapterConfig, AttentionLoraConfig, PromptedConfig)


def _section(kind: type[_Section], value: Union[_Section, Mapping[str, Any], None]) -> _Section:
    """A config section given as the dataclass, as the plain dict a checkpoint stores, or None (defaults)."""
    if value is None:
        return kind()
    return value if isinstance(value, kind) else kind(**value)


def create_model(
    *,
    out_channels: int,
    arch: str = "s2unet",
    encoder: str = "sam2.1_hiera_tiny",
    weights: str = "default",
    adapter: Union[AdapterConfig, Mapping[str, Any], None] = None,
    attention_lora: Union[AttentionLoraConfig, Mapping[str, Any], None] = None,
    decoder_channels: Sequence[int] = (128, 64, 32),
    train_encoder: bool = False,
    cnn_pretrained: bool = False,
    text_model: Optional[str] = None,
    text_injection: Literal["film", "xattn"] = "film",
    text_hidden: int = 256,
    text_tokens: int = 4,
    prompted: Union[PromptedConfig, Mapping[str, Any], None] = None,
    image_size: Optional[int] = None,
) -> SegmentationModel:
    """Build a model, loading pretrained weights where they are named.

    The keyword names are those of the ``model`` config section plus ``out_channels`` and, for a
    text-prompted model, the ``text_*`` arguments taken from the ``text`` section, so
    ``create_model(**model_args(cfg))`` builds what a config describes and a checkpoint's stored
    arguments rebuild its model.

    Args:
        out_channels: prediction channels (one per label, or one per class for multiclass).
        arch: a registered architecture (:mod:`.archs`): ``s2unet``, ``unet``, ``deeplabv3plus``,
            ``prompted_sam``...
        encoder: a registered encoder name (s2unet).
        weights: ``default`` (the encoder's published checkpoint), ``random`` or a file (s2unet).
        adapter: stage / block adapters (s2unet; defaults when None).
        attention_lora: peft LoRA on the attention projections (s2unet; off when None).
        decoder_channels: widths of the three decoder blocks, deepest first (s2unet).
        train_encoder: train every encoder parameter too (s2unet).
        cnn_pretrained: ImageNet encoder weights (DeepLabV3+).
        text_model: a registered text model (:mod:`s2unet.text.embedders`) whose phrase
            embeddings condition the decoder (s2unet); None: not text-prompted.
        text_injection: how a phrase enters the decoder blocks, ``film`` or ``xattn``.
        text_hidden: width of the projected phrase embedding.
        text_tokens: cross-attention key/value tokens made from a phrase (``xattn``).
        prompted: what trains and how it is prompted (prompted_sam; defaults when None).
        image_size: the square input side (prompted_sam: its prompt frame and embedding).

    Returns:
        The model; for s2unet only adapters, attention LoRA, decoder and heads require
        gradients unless ``train_encoder`` is set.

    Raises:
        KeyError: an unknown architecture.
        ValueError: a text model for an architecture without text, or no ``image_size`` for one
            built for a fixed input side.
    """
    spec = get_architecture(arch)
    if text_model is not None and not spec.takes_text:
        raise ValueError(f"create_model: text_model needs an architecture that takes text, not {arch!r}")
    if spec.takes_image_size and image_size is None:
        raise ValueError(f"create_model: {arch} needs image_size (the square input side)")
    return spec.build(ModelArgs(
        out_channels=out_channels, encoder=encoder, weights=weights, adapter=_section(AdapterConfig, adapter),
        attention_lora=_section(AttentionLoraConfig, attention_lora), decoder_channels=decoder_channels,
        train_encoder=train_encoder, cnn_pretrained=cnn_pretrained, text_model=text_model,
        text_injection=text_injection, text_hidden=text_hidden, text_tokens=text_tokens,
        prompted=_section(PromptedConfig, prompted), image_size=image_size,
    ))


def model_args(cfg: Config) -> dict[str, Any]:
    """The :func:`create_model` arguments a config describes, as builtins (checkpoints store them).

    Args:
        cfg: a run config.

    Returns:
        ``cfg.model`` as a dict plus ``out_channels``; a text-prompted model (``text.enabled``)
        adds the ``text_*`` arguments and has one output channel (one mask per phrase asked).
        Models without text carry no ``text_*`` key, so their arguments equal those stored before
        text prompts existed. prompted_sam adds ``image_size``: its prompt encoder is built for it.
    """
    args = {"out_channels": cfg.out_channels, **dataclasses.asdict(cfg.model)}
    t = cfg.text
    if t.enabled:
        args.update(out_channels=1, text_model=t.model, text_injection=t.injection, text_hidden=t.hidden,
                    text_tokens=t.tokens)
    if get_architecture(cfg.model.arch).takes_image_size:
        args["image_size"] = cfg.data.image_size
    return args


def create_model_from_config(cfg: Config) -> SegmentationModel:
    """:func:`create_model` with the arguments of a run config (:func:`model_args`)."""
    return create_model(**model_args(cfg))


def check_input_size(cfg: Config) -> Optional[EncoderSpec]:
    """Check that the encoder is registered and ``data.image_size`` a multiple of its stride
    (from the registry's spec: nothing is built); CNN baselines pad any size.

    Returns:
        The encoder's registry entry (None for the CNN baselines, which have no encoder).

    Raises:
        ConfigError: an unknown encoder or an image size it cannot take, naming the key.
    """
    from .encoders import get_encoder_spec

    if get_architecture(cfg.model.arch).encoders == "none":
        return None
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
    return spec


def check_model_config(cfg: Config) -> None:
    """Check the model section against the encoder registry before data is read or anything built.

    The encoder must be registered, ``data.image_size`` a multiple of its stride (from the
    registry's spec: nothing is built) and its checkpoint present unless random weights are
    asked for. CNN baselines pad any size and have no encoder checkpoint. ``text.model`` must
    be registered (the config layer cannot see the registry), and a text-prompted model's text
    model installed in its pinned version with unchanged files.

    Raises:
        ConfigError: an unknown encoder or text model, an image size the encoder cannot take, or
            a prompted architecture on an encoder without a SAM head, naming the key.
        CheckpointNotFoundError: with download (text model: install) instructions.
        CheckpointError: ``model.weights: default`` for an encoder without a published checkpoint;
            the text model is another version or its files changed.
    """
    from ..weights import locate_default_checkpoint, resolve_checkpoint

    check_registered(cfg.text.model, TEXT_MODELS, "text.model", "text model")
    if cfg.text.enabled:
        locate_text_model(TEXT_MODELS[cfg.text.model])
    spec = check_input_size(cfg)
    if spec is None:
        return
    if get_architecture(cfg.model.arch).encoders == "sam_head" and spec.sam_head is None:
        raise ConfigError(f"model.encoder {spec.name!r}: its checkpoint carries no SAM head for {cfg.model.arch} to fine-tune")
    if cfg.model.weights == "default":
        locate_default_checkpoint(spec)
    elif cfg.model.weights != "random":
        resolve_checkpoint(cfg.model.weights)


__all__ = [
    "Architecture", "ModelArgs", "get_architecture", "register_architecture",
    "S2UNet", "SegmentationModel", "check_input_size", "check_model_config", "create_encoder", "create_model", "create_model_from_config",
    "encoder_names", "model_args",
]
