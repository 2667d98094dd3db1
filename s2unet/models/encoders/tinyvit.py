"""TinyViT image encoders of the SAM family (LiteMedSAM and MobileSAM), resolution-agnostic.

The module tree mirrors the layout the public checkpoints use (``patch_embed.seq.{0,2}``,
``layers.{i}.blocks.{j}``, ``layers.{i}.downsample``, ``Conv2d + BatchNorm`` pairs named
``c`` / ``bn``), so ``image_encoder.*`` tensors load strictly after the prefix is stripped.
Unlike the published implementations, nothing here stores an input resolution: every spatial
size is read from the tensor, so any input that is a multiple of ``stride`` runs.

Architecture summary (both variants: embed dims 64/128/160/320, depths 2/2/6/2):

* ``patch_embed``: two Conv-BN layers with a GELU between them. MobileSAM uses 3x3 stride-2
  convolutions (overall stride 4); LiteMedSAM replaced them by 1x1 stride-1 convolutions.
* ``layers[0]``: MBConv blocks (inverted residual, depthwise 3x3) on NCHW maps.
* ``layers[1..3]``: TinyViT blocks on (B, L, C) tokens: windowed self-attention with a learned
  per-head bias indexed by the absolute (dy, dx) offset inside the window, a depthwise 3x3
  Conv-BN, then an MLP. Windows are zero-padded at the bottom/right like the original.
* ``layers[i].downsample`` (i < 3): 1x1 Conv-BN, depthwise 3x3 Conv-BN, 1x1 Conv-BN. The last
  one (160 -> 320 channels) keeps stride 1 in SAM's TinyViT so the embedding stays at 1/16.

The four features returned are each layer's block output before its downsample.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import AdapterSite, Encoder, EncoderSpec, Placement, register_encoder
from .windows import grid_to_windows, windows_to_grid

# SAM's pixel_mean/pixel_std (123.675, 116.28, 103.53) / (58.395, 57.12, 57.375) on 0..255,
# i.e. the ImageNet statistics for 0..1 inputs.
SAM_MEAN = (0.485, 0.456, 0.406)
SAM_STD = (0.229, 0.224, 0.225)

# Checkpoint entries the encoder does not use: the SAM neck (we take the raw stage features)
# and, in mobile_sam.pt, the leftover ImageNet classification head of TinyViT-5M.
_UNUSED_PREFIXES = ("neck.", "norm_head.", "head.")


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


class TinyViTEncoder(Encoder):
    """SAM-style TinyViT returning the four stage features (no neck).

    BatchNorm layers always run with their stored statistics (see ``train``): the encoder is
    used frozen, and batch statistics from small medical batches would both change the
    features and overwrite the pretrained running averages.
    """

    attention_lora_targets = r".*layers\.[1-3]\.blocks\.\d+\.attn\.(qkv|proj)$"

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        patch_stride: int = 4,
        merge_strides: Sequence[int] = (2, 2, 1),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        mean: tuple[float, float, float] = SAM_MEAN,
        std: tuple[float, float, float] = SAM_STD,
    ) -> None:
        """Args:
            embed_dims: channels of the four stages.
            depths: blocks per stage (stage 0 is MBConv, stages 1-3 attention).
            num_heads: attention heads per stage (entry 0 unused).
            window_sizes: attention window side per stage (entry 0 unused).
            patch_stride: 4 (SAM / MobileSAM) or 1 (LiteMedSAM) for the patch embedding.
            merge_strides: stride of the three merges between stages.
            mlp_ratio: MLP width of the attention blocks.
            mbconv_expand_ratio: hidden width of the MBConv blocks.
            local_conv_size: depthwise kernel inside the attention blocks.
            mean: per-channel mean of 0..1 RGB input the weights expect.
            std: per-channel std of 0..1 RGB input the weights expect.
        """
        super().__init__()
        if not (len(embed_dims) == len(depths) == len(num_heads) == len(window_sizes) == 4):
            raise ValueError("TinyViTEncoder needs exactly four stages")
        if len(merge_strides) != 3:
            raise ValueError("TinyViTEncoder needs three merge strides")
        self.patch_embed = PatchEmbed(3, embed_dims[0], patch_stride)
        layers = []
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            if i == 0:
                blocks: list[nn.Module] = [MBConv(dim, mbconv_expand_ratio) for _ in range(depth)]
            else:
                blocks = [
                    TinyViTBlock(dim, num_heads[i], window_sizes[i], mlp_ratio, local_conv_size)
                    for _ in range(depth)
                ]
            merge = PatchMerging(dim, embed_dims[i + 1], merge_strides[i]) if i < 3 else None
            layers.append(TinyViTLayer(blocks, merge))
        self.layers = nn.ModuleList(layers)
        self._init_weights()

        self.out_channels = tuple(embed_dims)  # type: ignore[assignment]
        self.strides, self.stride = self.strides_for(patch_stride=patch_stride, merge_strides=merge_strides)
        self.mean = tuple(mean)  # type: ignore[assignment]
        self.std = tuple(std)  # type: ignore[assignment]

    @classmethod
    def strides_for(cls, **kwargs: Any) -> tuple[tuple[int, int, int, int], int]:
        """``(strides, stride)`` for constructor arguments (see ``Encoder.strides_for``)."""
        bound = inspect.signature(cls).bind(**kwargs)
        bound.apply_defaults()
        strides = [bound.arguments["patch_stride"]]
        for s in bound.arguments["merge_strides"]:
            strides.append(strides[-1] * s)
        # Every merge must halve exactly so that feature i is H / strides[i].
        return tuple(strides), max(strides)  # type: ignore[return-value]

    def _init_weights(self) -> None:
        """Truncated-normal Linear weights for a sensible random initialisation."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def train(self, mode: bool = True) -> "TinyViTEncoder":
        """Set the training mode, keeping every BatchNorm on its pretrained statistics.

        Args:
            mode: training mode for everything but the BatchNorm layers.

        Returns:
            self.
        """
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args:
            x: (B, 3, H, W) normalised image, H and W multiples of ``stride``.

        Returns:
            Four (B, C_i, H / s_i, W / s_i) maps, C = ``out_channels``, s = ``strides``.
        """
        self.check_input(x)
        # oneDNN's depthwise and 1x1 convolutions of the MBConv stage prefer channels-last maps
        # (bench/results/investigation.md, item 11); the token stages reshape them without copies.
        x = x.contiguous(memory_format=torch.channels_last)
        feats = []
        nxt: torch.Tensor | None = self.patch_embed(x)
        for layer in self.layers:
            feat, nxt = layer(nxt)
            feats.append(feat)
        return feats

    def adapter_sites(self, placement: Placement) -> list[AdapterSite]:
        """Args:
            placement: ``"stage"`` (first block of each stage) or ``"block"`` (every block).

        Returns:
            Stage 0 (MBConv) sites take NCHW maps; stages 1-3 take (B, L, C) tokens.
        """
        if placement not in ("stage", "block"):
            raise ValueError(f"unknown adapter placement {placement!r}")
        sites = []
        for layer, dim in zip(self.layers, self.out_channels):
            blocks = list(layer.blocks) if placement == "block" else [layer.blocks[0]]
            sites += [AdapterSite(block, dim, channels_last=layer.tokens) for block in blocks]
        return sites

    def select_weights(self, checkpoint: dict, source: str) -> dict[str, torch.Tensor]:
        """Take ``image_encoder.*`` minus the neck (and MobileSAM's unused classifier head).

        Args:
            checkpoint: a SAM-layout state dict (optionally nested under ``"model"``).
            source: the file name, for error messages.

        Returns:
            The state dict to load strictly into this encoder.
        """
        state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
        prefix = "image_encoder."
        if not isinstance(state, dict) or not any(
            isinstance(k, str) and k.startswith(prefix) for k in state
        ):
            from ...weights import CheckpointError  # lazy: weights.py imports the encoders

            raise CheckpointError(
                f"{source}: no '{prefix}*' tensors found; expected a SAM-family state dict "
                f"(LiteMedSAM lite_medsam.pth or MobileSAM mobile_sam.pt)"
            )
        selected = {}
        for key, value in state.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix):]
            if not name.startswith(_UNUSED_PREFIXES):
                selected[name] = value
        return selected


register_encoder(
    EncoderSpec(
        name="litemedsam_tinyvit",
        build=TinyViTEncoder,
        weights="lite_medsam",
        description="LiteMedSAM TinyViT (MedSAM distilled; 1x1 patch embedding), strides 1/2/4/4",
        default_image_size=256,
        # LiteMedSAM was trained and is run on images min-max scaled to 0..1 and fed as is:
        # its MedSAMLite.forward passes the image straight to the encoder (no pixel_mean /
        # pixel_std step, none stored in the checkpoint) and the reference preprocessing only
        # divides 8-bit data by 255. Hence identity normalisation.
        kwargs=dict(patch_stride=1, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    )
)

register_encoder(
    EncoderSpec(
        name="mobilesam_tinyvit",
        build=TinyViTEncoder,
        weights="mobile_sam",
        description="MobileSAM TinyViT-5M (vit_t), strides 4/8/16/16",
        default_image_size=1024,
        # MobileSAM uses SAM's preprocessing: ImageNet mean/std (0..1 form).
        kwargs=dict(patch_stride=4, mean=SAM_MEAN, std=SAM_STD),
    )
)
