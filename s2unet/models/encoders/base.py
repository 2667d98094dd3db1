"""The interface every feature encoder implements, and the registry that builds them by name."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ...io.names import add_unique, lookup
from ...weights import CheckpointInfo, declare_checkpoint

Placement = Literal["stage", "block"]
Stats = tuple[float, float, float]

# The ImageNet channel statistics of 0..1 RGB, which SAM, SAM2 and ImageNet-pretrained CNNs
# normalise with (SAM's pixel_mean/pixel_std (123.675, 116.28, 103.53) / (58.395, 57.12,
# 57.375) on 0..255 are the same numbers).
IMAGENET_MEAN: Stats = (0.485, 0.456, 0.406)
IMAGENET_STD: Stats = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AdapterSite:
    """A module whose input an adapter transforms (through a forward pre-hook).

    Attributes:
        module: the block that receives the adapted tensor as its first positional input.
        dim: channel count of that input.
        channels_last: True when channels are the last axis ((B, H, W, C) or (B, L, C)),
            False for (B, C, H, W).
    """

    module: nn.Module
    dim: int
    channels_last: bool


class Encoder(nn.Module):
    """A frozen multi-scale image encoder returning four feature maps.

    Subclasses set ``out_channels`` and ``strides`` (one per feature map, shallow to deep) and
    ``stride`` (the size every input side must be a multiple of), and implement
    ``strides_for``, ``forward`` and ``adapter_sites``.

    Args:
        mean: per-channel mean of the normalisation of 0..1 RGB inputs that the pretrained
            weights expect (the registry entry's, see :class:`EncoderSpec`).
        std: the matching standard deviations.
    """

    out_channels: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]
    stride: int
    # Regex of the attention projections that optional peft LoRA targets.
    attention_lora_targets: str = r".*attn\.(qkv|proj)$"

    def __init__(self, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD) -> None:
        super().__init__()
        self.mean: Stats = tuple(mean)  # type: ignore[assignment]
        self.std: Stats = tuple(std)  # type: ignore[assignment]

    @classmethod
    def strides_for(cls, **kwargs: Any) -> tuple[tuple[int, int, int, int], int]:  # pragma: no cover - interface
        """``(strides, stride)`` of the encoder ``cls(**kwargs)`` builds, found without building it.

        The constructor takes its own values from here, and a config's image size is checked
        against ``stride`` before any weights are allocated.

        Args:
            kwargs: the constructor arguments (an ``EncoderSpec``'s ``kwargs``).

        Returns:
            The four feature strides (shallow to deep) and the input-side multiple.
        """
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - interface
        """Args:
            x: (B, 3, H, W) normalised image, H and W multiples of ``stride``.

        Returns:
            Four (B, C_i, H / s_i, W / s_i) feature maps, shallow to deep.
        """
        raise NotImplementedError

    def adapter_sites(self, placement: Placement) -> list[AdapterSite]:  # pragma: no cover
        """Where LoRA adapters go: ahead of each of the four stages, or ahead of every block."""
        raise NotImplementedError

    def select_weights(self, checkpoint: dict, source: str) -> dict[str, torch.Tensor]:  # pragma: no cover
        """Pick this encoder's tensors out of a loaded checkpoint file, named as in ``state_dict()``.

        Args:
            checkpoint: what ``torch.load(path, weights_only=True)`` returned.
            source: the file name, for error messages.

        Returns:
            The state dict to load strictly.
        """
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for inputs the encoder cannot take."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects (B, 3, H, W) input, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(
                f"{type(self).__name__}: input {h}x{w} is not a multiple of the encoder stride "
                f"{self.stride}; use an image_size such as {max(1, round(h / self.stride)) * self.stride}"
            )


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder: everything known about it, in one place.

    Attributes:
        name: the ``model.encoder`` name.
        build: the encoder class, built as ``build(**kwargs, mean=mean, std=std)``.
        checkpoint: the published checkpoint ``model.weights: default`` loads (file name,
            sha256, URL), or None when there is none.
        mean: the per-channel normalisation of 0..1 RGB inputs its pretrained weights expect.
        std: the matching standard deviations.
        description: one line for listings.
        default_image_size: the square input side it was designed for.
        kwargs: the architecture arguments of ``build``.
        sam_head: the SAM head its checkpoint carries, if any: ``sam1`` (a SAM1-layout neck,
            prompt encoder and mask decoder) or ``sam2`` (an official-format SAM2 image model);
            the encoders a prompted architecture (``prompted_sam``) can fine-tune.
    """

    name: str
    build: type[Encoder]
    checkpoint: CheckpointInfo | None
    mean: Stats = IMAGENET_MEAN
    std: Stats = IMAGENET_STD
    description: str = ""
    default_image_size: int = 352
    kwargs: dict = field(default_factory=dict)
    sam_head: Literal["sam1", "sam2"] | None = None

    @property
    def stride(self) -> int:
        """The size every input side must be a multiple of (the encoder is not built)."""
        return self.build.strides_for(**self.kwargs)[1]


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add an encoder to the registry.

    Args:
        spec: its entry; the name must be new.

    Returns:
        The entry.
    """
    add_unique(_REGISTRY, spec.name, spec, "encoder")
    if spec.checkpoint is not None:
        declare_checkpoint(spec.name, spec.checkpoint)
    return spec


def encoder_names() -> list[str]:
    """The registered encoder names, sorted."""
    return sorted(_REGISTRY)


def get_encoder_spec(name: str) -> EncoderSpec:
    """The registry entry of an encoder.

    Raises:
        KeyError: an unknown name, with the closest known one and the full list.
    """
    return lookup(_REGISTRY, name, "encoder", encoder_names())
