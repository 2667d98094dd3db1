"""Attention-gated U-Net decoder with a deep-supervision head on every block."""
from __future__ import annotations

from typing import Sequence

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


class UNetDecoder(nn.Module):
    """Three decoder blocks from the deepest feature map up to the shallowest skip.

    Args:
        encoder_channels: channels of the four encoder maps, shallow to deep.
        decoder_channels: widths of the three blocks, deep to shallow.
        out_channels: prediction channels of every deep-supervision head.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], out_channels: int) -> None:
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

    def forward(self, features: Sequence[torch.Tensor], size: tuple[int, int], all_heads: bool = True) -> list[torch.Tensor]:
        """Args:
            features: the four encoder maps, shallow to deep.
            size: (H, W) of the input image; every head is upsampled to it.
            all_heads: False computes only the last head (inference).

        Returns:
            Logits (B, C, H, W) of each head, deepest first; the last is the prediction.
        """
        x = self.bottleneck(features[3])
        outputs = []
        for i, (block, skip) in enumerate(zip(self.blocks, features[2::-1])):
            x = block(x, skip)
            if all_heads or i == len(self.blocks) - 1:
                logits = self.heads[i](x)
                outputs.append(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))
        return outputs
