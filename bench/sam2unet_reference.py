"""A SAM2-UNet reference for timing, written from the paper's description (Xiong et al., "SAM2-UNet:
Segment Anything 2 Makes Strong Encoder for Natural and Medical Image Segmentation",
arXiv 2408.08870), not from its code.

What the paper describes and this builds: the SAM2 Hiera trunk, frozen, with an adapter in front
of every Hiera block (a down-projecting linear layer, GELU, an up-projecting linear layer, GELU);
a receptive-field block (RFB) reducing each of the four trunk features to 64 channels; a U-Net
decoder of three up blocks (upsample, concatenate the skip, two 3x3 conv-BN-ReLU); one 1x1 head
on each up block's output, so three side outputs, all supervised in training. The trunk is built
from the ``sam2`` package exactly as s2unet builds it (``hiera_trunk_kwargs``); random weights
are enough for timing (same compute).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from sam2.modeling.backbones.hieradet import Hiera
from torch import nn

from s2unet.models.encoders.hiera import hiera_trunk_kwargs

CHANNELS = 64


class Adapter(nn.Module):
    """Down-projection, GELU, up-projection, GELU on the channels-last tokens of a Hiera block."""

    def __init__(self, dim: int, ratio: float = 0.25) -> None:
        super().__init__()
        hidden = max(int(dim * ratio), 1)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def conv_bn(cin: int, cout: int, kernel: int | tuple[int, int], padding: int | tuple[int, int] = 0,
            dilation: int = 1, relu: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if relu else []))


class RFB(nn.Module):
    """Receptive-field block: a 1x1 branch and three branches of 1x1, (1 x k), (k x 1) and a
    3x3 convolution dilated by k (k = 3, 5, 7), concatenated, fused by a 3x3 convolution and
    added to a 1x1 shortcut."""

    def __init__(self, cin: int, cout: int = CHANNELS) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn(cin, cout, 1)])
        for k in (3, 5, 7):
            self.branches.append(nn.Sequential(
                conv_bn(cin, cout, 1), conv_bn(cout, cout, (1, k), (0, k // 2)), conv_bn(cout, cout, (k, 1), (k // 2, 0)),
                conv_bn(cout, cout, 3, k, dilation=k)))
        self.fuse = conv_bn(4 * cout, cout, 3, 1)
        self.shortcut = conv_bn(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fuse(torch.cat([b(x) for b in self.branches], dim=1)) + self.shortcut(x))


class Up(nn.Module):
    """U-Net up block: bilinear x2 upsampling, concatenation with the skip, two conv-BN-ReLU."""

    def __init__(self, channels: int = CHANNELS) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv_bn(2 * channels, channels, 3, 1, relu=True),
                                  conv_bn(channels, channels, 3, 1, relu=True))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class SAM2UNetReference(nn.Module):
    """Frozen Hiera trunk with adapters, four RFBs, three up blocks and three side outputs.

    Args:
        config: the sam2 config of the trunk (Hiera-T by default).
        out_channels: output channels of each head.
    """

    def __init__(self, config: str = "configs/sam2.1/sam2.1_hiera_t.yaml", out_channels: int = 1) -> None:
        super().__init__()
        self.trunk = Hiera(**hiera_trunk_kwargs(config))
        self.trunk.requires_grad_(False)
        dims = []
        for i, block in enumerate(self.trunk.blocks):
            self.trunk.blocks[i] = nn.Sequential(Adapter(block.dim), block)
            dims.append(block.dim_out)
        stage_dims = [dims[end] for end in self.trunk.stage_ends]
        self.rfbs = nn.ModuleList([RFB(d) for d in stage_dims])
        self.ups = nn.ModuleList([Up() for _ in range(3)])
        self.heads = nn.ModuleList([nn.Conv2d(CHANNELS, out_channels, 1) for _ in range(3)])

    def forward(self, x: torch.Tensor, all_heads: bool = True) -> list[torch.Tensor]:
        """(B, 3, H, W) -> side outputs at the input size, coarsest first (the last is the
        prediction); ``all_heads=False`` computes the last head only, as inference needs."""
        f1, f2, f3, f4 = (rfb(f) for rfb, f in zip(self.rfbs, self.trunk(x)))
        outputs, y = [], f4
        for i, (up, skip) in enumerate(zip(self.ups, (f3, f2, f1))):
            y = up(y, skip)
            if all_heads or i == 2:
                outputs.append(F.interpolate(self.heads[i](y), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return outputs


def reference_loss(outputs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """BCE plus soft IoU summed over the side outputs (the paper's deep supervision)."""
    total = outputs[0].new_zeros(())
    for logits in outputs:
        logits = logits.float()
        p = torch.sigmoid(logits)
        inter = (p * target).sum((2, 3))
        iou = 1 - (inter + 1) / ((p + target - p * target).sum((2, 3)) + 1)
        total = total + F.binary_cross_entropy_with_logits(logits, target) + iou.mean()
    return total
