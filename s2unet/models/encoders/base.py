"""The interface every feature encoder implements, and the registry that builds them by name."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

Placement = Literal["stage", "block"]


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

    Subclasses set ``out_channels`` and ``strides`` (one per feature map, shallow to deep),
    ``stride`` (the size every input side must be a multiple of), ``mean``/``std`` (the
    normalisation of 0..1 RGB inputs the pretrained weights expect) and implement
    ``strides_for``, ``forward`` and ``adapter_sites``.
    """

    out_channels: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]
    stride: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # Regex of the attention projections that optional peft LoRA targets.
    attention_lora_targets: str = r".*attn\.(qkv|proj)$"

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
    """A registered encoder: its builder and the checkpoint it loads by default."""

    name: str
    build: type[Encoder]
    weights: str | None  # key into s2unet.weights.KNOWN_CHECKPOINTS
    description: str = ""
    default_image_size: int = 352
    kwargs: dict = field(default_factory=dict)

    @property
    def stride(self) -> int:
        """The size every input side must be a multiple of (the encoder is not built)."""
        return self.build.strides_for(**self.kwargs)[1]


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    if spec.name in _REGISTRY:
        raise KeyError(f"encoder {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def encoder_names() -> list[str]:
    return sorted(_REGISTRY)


def get_encoder_spec(name: str) -> EncoderSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown encoder {name!r}{hint}; known: {', '.join(encoder_names())}") from None
