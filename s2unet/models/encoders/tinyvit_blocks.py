"""The building blocks of the TinyViT encoders (:mod:`s2unet.models.encoders.tinyvit`).

Module and parameter names follow the public SAM-family checkpoints (``seq.{0,2}``,
``blocks.{j}``, ``downsample``, ``Conv2d + BatchNorm`` pairs named ``c`` / ``bn``), so their
tensors load strictly.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .windows import grid_to_windows, windows_to_grid


class Conv2dBN(nn.Sequential):
    """A bias-free convolution followed by BatchNorm; children are named ``c`` and ``bn``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        """Args:
            in_channels: input channels.
            out_channels: output channels.
            kernel_size: square kernel size; padding keeps the "same" size at stride 1.
            stride: convolution stride.
            groups: convolution groups (``in_channels`` for depthwise).
            bn_weight_init: initial BatchNorm scale (0 makes a residual branch start as identity).
        """
        super().__init__()
        self.c = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class PatchEmbed(nn.Module):
    """Two Conv-BN layers (GELU in between) from RGB to the first embedding dimension."""

    def __init__(self, in_channels: int, embed_dim: int, stride: int) -> None:
        """Args:
            in_channels: image channels.
            embed_dim: output channels.
            stride: 4 (two 3x3 stride-2 convolutions, SAM / MobileSAM) or 1 (two 1x1
                convolutions, LiteMedSAM).
        """
        super().__init__()
        if stride == 4:
            kernel, step = 3, 2
        elif stride == 1:
            kernel, step = 1, 1
        else:
            raise ValueError(f"TinyViT patch embedding stride must be 1 or 4, got {stride}")
        self.seq = nn.Sequential(
            Conv2dBN(in_channels, embed_dim // 2, kernel, step),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, kernel, step),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, 3, H, W) image.

        Returns:
            (B, C, H / stride, W / stride) map.
        """
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted-residual block: 1x1 expand, depthwise 3x3, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        """Args:
            dim: input and output channels.
            expand_ratio: hidden width relative to ``dim``.
        """
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = Conv2dBN(hidden, dim, bn_weight_init=0.0)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, C, H, W) map.

        Returns:
            (B, C, H, W) map.
        """
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        # The activation follows the residual sum in TinyViT's MBConv (not only the branch).
        return self.act(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Channel change plus optional 2x downsampling between two TinyViT layers."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        """Args:
            dim: input channels.
            out_dim: output channels.
            stride: 2, or 1 for SAM's last merge that keeps the 1/16 embedding grid.
        """
        super().__init__()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, C, H, W) map.

        Returns:
            (B, out_dim, H / stride, W / stride) map (rounded up for odd sizes).
        """
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class WindowAttention(nn.Module):
    """Multi-head self-attention over the tokens of one square window, with TinyViT's bias.

    The learned bias has one value per head and per absolute offset (|dy|, |dx|) between two
    positions of the window, so it depends on the window size only, never on the image size.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        """Args:
            dim: token channels (divisible by ``num_heads``).
            num_heads: attention heads.
            window_size: side of the square window.
        """
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        # The checkpoints number the offsets in order of first appearance while scanning all
        # position pairs row-major; the pairs with the first position at (0, 0) already list
        # every offset, so offset (dy, dx) has index dy * window_size + dx.
        pos = torch.arange(window_size)
        rows = pos.repeat_interleave(window_size)
        cols = pos.repeat(window_size)
        dy = (rows[:, None] - rows[None, :]).abs()
        dx = (cols[:, None] - cols[None, :]).abs()
        self.register_buffer("bias_index", dy * window_size + dx, persistent=False)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (..., C) tokens.

        Returns:
            (..., 3C) their normed qkv projection, in the checkpoints' head-major layout.
        """
        return self.qkv(self.norm(x))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Args:
            qkv: (N, window_size**2, 3C) projected tokens of N windows (see ``project``).

        Returns:
            (N, window_size**2, C) attended tokens, before the output projection ``proj``.
        """
        n, length, _ = qkv.shape
        # The checkpoints' qkv output is laid out head-major ([q_h, k_h, v_h] per head), not
        # the usual (3, heads, head_dim).
        q, k, v = qkv.view(n, length, self.num_heads, 3, self.head_dim).permute(3, 0, 2, 1, 4).unbind(0)
        # A 4-D mask lets torch use its fused CPU attention kernel; a 3-D one falls back to the
        # unfused path (bench/results/investigation.md, item 11).
        bias = self.attention_biases[:, self.bias_index].to(q.dtype).unsqueeze(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return out.transpose(1, 2).reshape(n, length, self.num_heads * self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (N, window_size**2, C) tokens of N windows.

        Returns:
            (N, window_size**2, C) attended tokens.
        """
        return self.proj(self.attend(self.project(x)))


class Mlp(nn.Module):
    """Pre-norm two-layer GELU MLP."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        """Args:
            dim: token channels.
            hidden_dim: hidden width.
        """
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (..., C) tokens.

        Returns:
            (..., C) tokens.
        """
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise 3x3 Conv-BN, MLP, on (B, L, C) tokens of an H x W grid."""

    def __init__(
        self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int
    ) -> None:
        """Args:
            dim: token channels.
            num_heads: attention heads.
            window_size: side of the square attention window.
            mlp_ratio: MLP hidden width relative to ``dim``.
            local_conv_size: kernel of the depthwise convolution between attention and MLP.
        """
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _windowed_attention(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Attention inside non-overlapping windows of the (B, H*W, C) grid.

        A grid that is not a whole number of windows is zero-padded at the bottom and right,
        and the zero tokens (not masked out) take part in the attention, as in the pretrained
        model. They all project to the same qkv, so only the real tokens are projected (at
        256 px the third stage's 16 x 16 grid pads to 28 x 28 for windows of 14) and the output
        projection runs after the padding is cropped.
        """
        b, _, c = x.shape
        ws = self.window_size
        qkv = self.attn.project(x).view(b, h, w, 3 * c)
        windows = grid_to_windows(qkv, self.attn.project(x.new_zeros(c)), ws).flatten(1, 2)
        out = self.attn.attend(windows).view(-1, ws, ws, c)
        return self.attn.proj(windows_to_grid(out, h, w).view(b, h * w, c))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Args:
            x: (B, H*W, C) tokens, row-major. First positional argument so adapter pre-hooks
                see it.
            hw: the grid size (H, W).

        Returns:
            (B, H*W, C) tokens.
        """
        h, w = hw
        b, length, c = x.shape
        if length != h * w:
            raise ValueError(f"TinyViTBlock got {length} tokens for a {h}x{w} grid")
        x = x + self._windowed_attention(x, h, w)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return x + self.mlp(x)


class TinyViTLayer(nn.Module):
    """One TinyViT stage: its blocks, then an optional ``downsample`` to the next stage."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: PatchMerging | None) -> None:
        """Args:
            blocks: MBConv blocks (NCHW in) or TinyViT blocks ((B, L, C) tokens in).
            downsample: the merge into the next stage, or None for the last stage.
        """
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.tokens = any(isinstance(b, TinyViTBlock) for b in self.blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args:
            x: (B, C, H, W) map.

        Returns:
            The stage feature (B, C, H, W) before downsampling, and the downsampled input of
            the next stage (None for the last stage).
        """
        if self.tokens:
            b, c, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            for block in self.blocks:
                t = block(t, (h, w))
            x = t.transpose(1, 2).reshape(b, c, h, w)
        else:
            for block in self.blocks:
                x = block(x)
        return x, (self.downsample(x) if self.downsample is not None else None)
