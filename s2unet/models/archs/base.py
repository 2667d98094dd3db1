"""The architecture registry: each ``model.arch`` with its capabilities and its builder.

Capabilities are properties of the architecture, not string tests over the code: whether
evaluation needs the reference (prompted models draw their prompts from it), whether its encoder
features can be cached, whether it takes prompts or text, and which encoders it accepts. The
config-visible ones are its :class:`~s2unet.config.ArchTraits` row, declared on registration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence

from ...config import AdapterConfig, AttentionLoraConfig, ModelConfig, PromptedConfig, declare_arch_traits
from ...config.architectures import ArchTraits
from ...io.names import add_unique, lookup
from ..base import SegmentationModel


@dataclass(frozen=True)
class ModelArgs:
    """What :func:`s2unet.models.create_model` was given, sections as dataclasses; a builder reads
    the fields its architecture uses (see ``create_model`` for each one's meaning)."""

    out_channels: int
    encoder: str
    weights: str
    adapter: AdapterConfig
    attention_lora: AttentionLoraConfig
    decoder_channels: Sequence[int]
    train_encoder: bool
    cnn_pretrained: bool
    text_model: Optional[str]
    text_injection: Literal["film", "xattn"]
    text_hidden: int
    text_tokens: int
    prompted: PromptedConfig
    image_size: Optional[int]


@dataclass(frozen=True)
class Architecture:
    """A registered architecture.

    Attributes:
        name: the ``model.arch`` name.
        build: makes the model from the :class:`ModelArgs`.
        traits: what config validation checks of it (encoders, text, prompts).
        caches_features: its frozen encoder's features may be kept across epochs
            (``train.cache_features``; the model must expose ``encoder_trains``).
        takes_image_size: it is built for one square input side, so ``create_model`` needs
            ``image_size`` and a config's arguments carry ``data.image_size``.
    """

    name: str
    build: Callable[[ModelArgs], SegmentationModel]
    traits: ArchTraits = ArchTraits()
    caches_features: bool = False
    takes_image_size: bool = False

    @property
    def encoders(self) -> Literal["none", "any", "sam_head"]:
        """Which ``model.encoder`` it takes (see :class:`ArchTraits`)."""
        return self.traits.encoders

    @property
    def takes_text(self) -> bool:
        return self.traits.takes_text

    @property
    def takes_prompts(self) -> bool:
        return self.traits.takes_prompts

    def title(self, model: ModelConfig) -> str:
        """How a run's heading names the model: by its encoder where any encoder can be chosen."""
        return model.encoder if self.encoders == "any" else self.name

    def needs_reference(self, model: ModelConfig) -> bool:
        """Whether evaluation must pass the reference mask: prompts drawn from it (``box``)."""
        return self.takes_prompts and model.prompted.prompt == "box"


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Add an architecture to the registry (and its traits to the config table).

    Raises:
        KeyError: the name is registered already, or the config table holds other traits for it.
    """
    declare_arch_traits(arch.name, arch.traits)
    add_unique(_REGISTRY, arch.name, arch, "architecture")
    return arch


def get_architecture(name: str) -> Architecture:
    """The registry entry of ``model.arch`` (KeyError naming the closest and all known ones)."""
    return lookup(_REGISTRY, name, "architecture")
