"""S2UNet: frozen encoder + low-rank adapters + attention-gated U-Net decoder."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Literal, Sequence

import torch
from torch import nn

from ..config import AdapterConfig, AttentionLoraConfig
from .base import SegmentationModel
from .adapters import attach_attention_lora, attach_stage_adapters, merge_attention_lora
from .decoder import UNetDecoder
from .encoders import Encoder
from ..weights import CheckpointError


class S2UNet(SegmentationModel):
    """The segmentation model.

    Args:
        encoder: a frozen multi-scale encoder (see ``s2unet.models.encoders``).
        out_channels: prediction channels.
        adapter: the stage / block adapters (``model.adapter``).
        attention_lora: optional peft LoRA on the attention projections (``model.attention_lora``).
        decoder_channels: channels of the three decoder blocks, deepest first.
        train_encoder: make every encoder parameter trainable (full fine-tuning).
        random_encoder: the encoder was drawn at random rather than loaded from a file.
        text_dim: width of the phrase embeddings that condition the decoder (0: not
            text-prompted; see :class:`~s2unet.models.decoder.UNetDecoder`).
        text_injection: ``film`` or ``xattn``.
        text_hidden: width of the projected phrase embedding.
        text_tokens: cross-attention tokens.

    Inputs are (B, 3, H, W) images scaled to 0..1; the model applies the encoder's own
    normalisation, so data code never needs to know which encoder it feeds.
    """

    def __init__(self, encoder: Encoder, out_channels: int, adapter: AdapterConfig,
                 attention_lora: AttentionLoraConfig, decoder_channels: Sequence[int],
                 train_encoder: bool = False, random_encoder: bool = False, text_dim: int = 0,
                 text_injection: Literal["film", "xattn"] = "film", text_hidden: int = 256,
                 text_tokens: int = 4) -> None:
        super().__init__()
        self.encoder = encoder
        self.adapters = attach_stage_adapters(encoder, adapter)
        attach_attention_lora(encoder, attention_lora)
        if train_encoder:
            for p in encoder.parameters():
                p.requires_grad_(True)
        self.decoder = UNetDecoder(encoder.out_channels, decoder_channels, out_channels, text_dim=text_dim,
                                   injection=text_injection, text_hidden=text_hidden, text_tokens=text_tokens)
        self.register_buffer("mean", torch.tensor(encoder.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(encoder.std).view(1, 3, 1, 1), persistent=False)
        self.train_encoder = train_encoder
        # A random encoder cannot be rebuilt from a file (a fresh draw differs), so checkpoints
        # carry its tensors, as they do when the encoder itself is trained.
        self.saves_encoder = train_encoder or random_encoder

    @property
    def encoder_trains(self) -> bool:
        """True when anything inside the encoder's forward pass needs gradients."""
        return len(self.adapters) > 0 or any(p.requires_grad for p in self.encoder.parameters())

    def train(self, mode: bool = True) -> "S2UNet":
        super().train(mode)
        if not self.train_encoder:
            # Frozen BatchNorm (TinyViT) must not update its running statistics.
            for module in self.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder feature maps of a 0..1 image batch (no autograd when nothing in it trains)."""
        self.encoder.check_input(x)
        x = (x - self.mean) / self.std
        with nullcontext() if (self.encoder_trains and torch.is_grad_enabled()) else torch.no_grad():
            return self.encoder(x)

    def forward(self, x: torch.Tensor, features: list[torch.Tensor] | None = None,
                text: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args:
            x: (B, 3, H, W) in 0..1, H and W multiples of the encoder stride.
            features: the encoder maps of ``x`` when already known (a feature cache in
                decoder-only training); the encoder is then skipped.
            text: text-prompted models only: phrase embeddings (B, P, D) or (P, D).

        Returns:
            Logits (B, C, H, W) of the three deep-supervision heads, deepest first; the last
            is the prediction. Text-prompted: (B, P, H, W), one channel per phrase.
        """
        return self.decoder(self.features(x) if features is None else features, x.shape[-2:], text=text)

    def predict_logits(self, x: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """The final head's logits only (skips the other heads' convolutions)."""
        return self.decoder(self.features(x), x.shape[-2:], all_heads=False, text=text)[-1]

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What rebuilds the trained model: trainable parameters plus the decoder's BatchNorm
        statistics, and every encoder tensor when the encoder is trained or random.

        Frozen encoder weights from a file are left out, so a checkpoint stays small and the
        model is rebuilt from the encoder file plus this; a ``model.weights: random`` encoder is
        stored whole (about 110 MB for Hiera-T), the only way to rebuild the same model.
        """
        frozen = self._frozen_encoder_keys()
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k not in frozen or self.saves_encoder}

    def _frozen_encoder_keys(self) -> set[str]:
        """State-dict keys of the encoder that training does not change."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k for k in self.state_dict() if k.startswith("encoder.") and k not in trainable}

    def load_trained_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Load what ``trained_state_dict`` saved; keys and shapes must match exactly.

        Args:
            state: the tensors from a checkpoint.
            source: the file they came from, named in errors.

        Raises:
            CheckpointError: the tensors do not fit this model, or a random encoder's tensors are
                missing (a checkpoint written before they were stored cannot be rebuilt).
        """
        frozen = self._frozen_encoder_keys()
        if self.saves_encoder and frozen and frozen.isdisjoint(state):
            raise CheckpointError(
                f"{source} was trained with model.weights: random but holds no encoder tensors (written by an "
                "older s2unet); a fresh random encoder would give other predictions, so it cannot be loaded"
            )
        super().load_trained_state_dict(state, source)

    def merge_lora(self) -> int:
        """Fold attention LoRA into the encoder weights for inference; returns layers merged."""
        return merge_attention_lora(self.encoder)
