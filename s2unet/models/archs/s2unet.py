"""``s2unet``: a frozen registered encoder, adapters and the attention-gated U-Net decoder."""
from __future__ import annotations

from ...config import ARCH_TRAITS
from ...text.embedders import get_text_model_spec
from ..encoders import create_encoder
from ..s2unet import S2UNet
from .base import Architecture, ModelArgs


def build(a: ModelArgs) -> S2UNet:
    return S2UNet(
        create_encoder(a.encoder, a.weights), a.out_channels, a.adapter, a.attention_lora, a.decoder_channels,
        a.train_encoder, random_encoder=a.weights == "random",
        text_dim=0 if a.text_model is None else get_text_model_spec(a.text_model).dim,
        text_injection=a.text_injection, text_hidden=a.text_hidden, text_tokens=a.text_tokens,
    )


ARCH = Architecture("s2unet", build, ARCH_TRAITS["s2unet"], caches_features=True)
