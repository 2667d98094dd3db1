"""Attention-gated U-Net decoder with a deep-supervision head on every block."""
from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)
    )


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, "Attention U-Net").

    The gating signal from the deeper level decides, per pixel, how much of the skip
    connection passes: ``skip * sigmoid(psi(relu(W_s skip + W_g gate)))``.

    Args:
        skip_ch: channels of the skip connection.
        gate_ch: channels of the (already upsampled) gating signal.
        inter_ch: channels of the joint embedding.
    """

    def __init__(self, skip_ch: int, gate_ch: int, inter_ch: int) -> None:
        super().__init__()
        self.w_skip = nn.Sequential(nn.Conv2d(skip_ch, inter_ch, 1, bias=False), nn.BatchNorm2d(inter_ch))
        self.w_gate = nn.Sequential(nn.Conv2d(gate_ch, inter_ch, 1, bias=False), nn.BatchNorm2d(inter_ch))
        self.psi = nn.Sequential(nn.Conv2d(inter_ch, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return skip * self.psi(F.relu(self.w_skip(skip) + self.w_gate(gate)))


class DecoderBlock(nn.Module):
    """Upsample to the skip's size, gate the skip, concatenate, two Conv-BN-ReLU layers.

    Args:
        in_ch: channels coming from the deeper level.
        skip_ch: channels of the encoder skip connection.
        out_ch: channels this block produces.
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.gate = AttentionGate(skip_ch, in_ch, max(skip_ch // 2, 8))
        self.convs = nn.Sequential(conv_bn_relu(in_ch + skip_ch, out_ch), conv_bn_relu(out_ch, out_ch))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # Interpolating to the skip's size (not a fixed x2) also serves encoders whose last two
        # stages share a stride, such as TinyViT.
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([self.gate(skip, x), x], dim=1))


class FiLM(nn.Module):
    """Feature-wise linear modulation (Perez et al. 2018): ``x * (1 + gamma(c)) + beta(c)``.

    The projection starts at zero, so an untrained conditioning leaves the features unchanged.

    Args:
        cond_dim: width of the condition vector.
        channels: channels of the modulated feature map.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond)[..., None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


class CrossAttention(nn.Module):
    """Pixels attend to a few tokens made from the condition vector; added back with a learnable gain.

    ``x + gain * attn(norm(x), tokens(c))``: every pixel mixes the condition tokens by its own
    weights, so the injection can differ across the image (FiLM is the same everywhere).

    Args:
        cond_dim: width of the condition vector.
        channels: channels of the feature map (the attention width).
        tokens: key/value tokens made from the condition.
        gain: initial value of the learnable gain (small: starts close to the identity).
    """

    def __init__(self, cond_dim: int, channels: int, tokens: int, gain: float = 0.1) -> None:
        super().__init__()
        self.tokens = tokens
        self.to_tokens = nn.Linear(cond_dim, tokens * channels)
        self.norm = nn.GroupNorm(1, channels)
        self.attn = nn.MultiheadAttention(channels, num_heads=max(1, channels // 32), batch_first=True)
        self.gain = nn.Parameter(torch.tensor(float(gain)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        query = self.norm(x).flatten(2).transpose(1, 2)
        kv = self.to_tokens(cond).view(n, self.tokens, c)
        out, _ = self.attn(query, kv, kv, need_weights=False)
        return x + self.gain * out.transpose(1, 2).reshape(n, c, h, w)


class PhraseHead(nn.Module):
    """The text-dependent part of a deep-supervision head: a 1x1 convolution whose weights are
    made from the condition vector (a hypernetwork, as SAM's mask decoder makes its mask weights
    from the output token). Each phrase thereby has its own output weights from the first step,
    as each label of a multi-label head has; zero-initialised, so it starts as the static head.

    Args:
        cond_dim: width of the condition vector.
        channels: channels of the feature map.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, channels + 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        weight, bias = self.proj(cond).split([x.shape[1], 1], dim=1)
        return torch.einsum("nchw,nc->nhw", x, weight).unsqueeze(1) + bias[..., None, None]


class UNetDecoder(nn.Module):
    """Three decoder blocks from the deepest feature map up to the shallowest skip.

    Args:
        encoder_channels: channels of the four encoder maps, shallow to deep.
        decoder_channels: widths of the three blocks, deep to shallow.
        out_channels: prediction channels of every deep-supervision head.
        text_dim: width of a phrase embedding to condition on (0: no conditioning). The
            embedding goes through a shared two-layer projection, then into every block's
            output by ``injection`` and into every head (:class:`PhraseHead`); each phrase
            gets its own mask.
        injection: ``film`` or ``xattn`` (:class:`FiLM`, :class:`CrossAttention`).
        text_hidden: width of the projected embedding.
        text_tokens: cross-attention tokens.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], out_channels: int,
                 text_dim: int = 0, injection: Literal["film", "xattn"] = "film", text_hidden: int = 256,
                 text_tokens: int = 4) -> None:
        super().__init__()
        if len(encoder_channels) != 4 or len(decoder_channels) != 3:
            raise ValueError(
                f"UNetDecoder needs 4 encoder widths and 3 decoder widths, got {list(encoder_channels)} "
                f"and {list(decoder_channels)}"
            )
        skips = list(encoder_channels[:3])[::-1]
        # A 1x1 projection of the deepest map keeps the first 3x3 convolutions small: the
        # deepest Hiera stage has 8x the embedding width.
        self.bottleneck = nn.Sequential(
            nn.Conv2d(encoder_channels[3], decoder_channels[0], 1, bias=False),
            nn.BatchNorm2d(decoder_channels[0]),
            nn.ReLU(inplace=True),
        )
        ins = [decoder_channels[0], *decoder_channels[:2]]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels))
        self.heads = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in decoder_channels)
        self.text_dim = text_dim
        if text_dim:
            if injection not in ("film", "xattn"):
                raise ValueError(f"UNetDecoder: injection must be 'film' or 'xattn', got {injection!r}")
            # LayerNorm first: phrase embeddings are unit vectors (entries ~ 1/sqrt(D)), which the
            # default Linear init would map to nearly the same vector (its bias) for every phrase.
            self.text_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, text_hidden), nn.GELU(),
                                           nn.Linear(text_hidden, text_hidden))
            self.inject = nn.ModuleList(
                FiLM(text_hidden, c) if injection == "film" else CrossAttention(text_hidden, c, text_tokens)
                for c in decoder_channels
            )
            self.phrase_heads = nn.ModuleList(PhraseHead(text_hidden, c) for c in decoder_channels)

    def forward(self, features: Sequence[torch.Tensor], size: tuple[int, int], all_heads: bool = True,
                text: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
        """Args:
            features: the four encoder maps, shallow to deep.
            size: (H, W) of the input image; every head is upsampled to it.
            all_heads: False computes only the last head (inference).
            text: for a conditioned decoder, phrase embeddings (B, P, text_dim) or (P, text_dim)
                (the same P phrases for every image); each image is decoded once per phrase.

        Returns:
            Logits (B, C, H, W) of each head, deepest first; the last is the prediction. A
            conditioned decoder (one output channel) returns (B, P, H, W): one mask per phrase.
        """
        x = self.bottleneck(features[3])
        skips = list(features[2::-1])
        cond = None
        if self.text_dim:
            text = self._check_text(text, x.shape[0])
            b, p = text.shape[:2]
            cond = self.text_proj(text.reshape(b * p, -1).to(x.dtype))
            # Encoder and bottleneck run once per image; only the blocks run once per phrase.
            x = x.repeat_interleave(p, dim=0)
            skips = [s.repeat_interleave(p, dim=0) for s in skips]
        elif text is not None:
            raise ValueError("this decoder is not text-conditioned; it takes no phrase embeddings")
        outputs = []
        for i, (block, skip) in enumerate(zip(self.blocks, skips)):
            x = block(x, skip)
            if cond is not None:
                x = self.inject[i](x, cond)
            if all_heads or i == len(self.blocks) - 1:
                logits = self.heads[i](x) if cond is None else self.heads[i](x) + self.phrase_heads[i](x, cond)
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
                outputs.append(logits if cond is None else logits.view(b, p, *size))
        return outputs

    def _check_text(self, text: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        """Phrase embeddings as (batch, P, text_dim), or an error naming the shape expected."""
        if text is None:
            raise ValueError(f"this model is text-prompted: give phrase embeddings (P, {self.text_dim}) or "
                             f"(B, P, {self.text_dim})")
        if text.ndim == 2:
            text = text.unsqueeze(0).expand(batch, -1, -1)
        if text.ndim != 3 or text.shape[0] != batch or text.shape[2] != self.text_dim or text.shape[1] == 0:
            raise ValueError(f"phrase embeddings must be (P, {self.text_dim}) or ({batch}, P, {self.text_dim}) "
                             f"with P >= 1, got {tuple(text.shape)}")
        return text
