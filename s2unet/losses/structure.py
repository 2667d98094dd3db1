"""``structure`` (the default): pixel-weighted BCE (or CE) + weighted IoU on every head.

The structure loss is pixel-weighted BCE + weighted IoU (as in PraNet / SAM2-UNet):
pixels near a boundary, where the 31x31 local mean of the mask differs from the mask, weigh
up to 6x more. The weight is applied to the per-pixel BCE *before* any reduction; reducing the
BCE first (a known slip in public code, via the deprecated ``reduce='none'`` argument) silently
turns it into plain BCE.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..config import ConfigError, ranged
from .base import HeadLosses, LossSpec


@dataclass
class StructureParams:
    """The ``loss:`` keys of ``structure``: the boundary weights ``1 + gain * |boxmean_k(y) - y|``."""

    boundary_kernel: int = ranged("[1, inf)", 31)  # side of the box mean, odd (it is centred)
    boundary_gain: float = ranged("[0, inf)", 5.0)  # 0: every pixel weighs 1


def boundary_weights(target: torch.Tensor, kernel: int = 31, gain: float = 5.0) -> torch.Tensor:
    """Per-pixel weights ``1 + gain * |avgpool(target) - target|`` for (B, C, H, W) targets.

    With zero padding counted, the k x k box mean is exactly a k x 1 mean followed by a 1 x k
    mean: 2k instead of k^2 additions per pixel (the dense 31 x 31 pool was a fifth of a
    Hiera-T training step).
    """
    pad = kernel // 2
    local_mean = F.avg_pool2d(target, (kernel, 1), stride=1, padding=(pad, 0), count_include_pad=True)
    local_mean = F.avg_pool2d(local_mean, (1, kernel), stride=1, padding=(0, pad), count_include_pad=True)
    return 1.0 + gain * (local_mean - target).abs()


def structure_weights(target: torch.Tensor, num_channels: int, multiclass: bool, kernel: int = 31,
                      gain: float = 5.0) -> torch.Tensor:
    """The boundary weights of a target, (B, C, H, W), or (B, 1, H, W) for class-index targets."""
    if multiclass:
        onehot = F.one_hot(target.long(), num_channels).movedim(-1, 1).float()
        return boundary_weights(onehot, kernel, gain).amax(dim=1, keepdim=True)  # a boundary of any class
    return boundary_weights(target.float(), kernel, gain)


def structure_loss(logits: torch.Tensor, target: torch.Tensor, multiclass: bool = False,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted BCE (or CE) + weighted IoU, averaged over images and channels.

    Args:
        logits: (B, C, H, W).
        target: (B, C, H, W) in {0, 1} for sigmoid outputs, or (B, H, W) class indices when
            ``multiclass`` (softmax over C).
        multiclass: softmax/cross-entropy instead of one sigmoid per channel.
        weight: ``structure_weights(target, ...)`` when already computed (one target serves
            every deep-supervision head).

    Returns:
        A scalar loss.
    """
    if weight is None:
        weight = structure_weights(target, logits.shape[1], multiclass)
    weight = weight.to(logits.dtype)
    if multiclass:
        target_c = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        ce = F.cross_entropy(logits, target.long(), reduction="none")
        pixel = (weight[:, 0] * ce).sum((1, 2)) / weight[:, 0].sum((1, 2))
        prob = logits.softmax(1)
    else:
        target_c = target.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target_c, reduction="none")
        pixel = ((weight * bce).sum((2, 3)) / weight.sum((2, 3))).mean(1)
        prob = logits.sigmoid()
    inter = (prob * target_c * weight).sum((2, 3))
    union = ((prob + target_c) * weight).sum((2, 3))
    iou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
    return (pixel + iou.mean(1)).mean()


def check(params: StructureParams) -> None:
    """An even kernel has no centre pixel: its padded box mean would be one pixel larger than the mask.

    Raises:
        ConfigError: naming the key.
    """
    if params.boundary_kernel % 2 == 0:
        raise ConfigError(f"loss.boundary_kernel must be odd (the box is centred on each pixel), "
                          f"got {params.boundary_kernel}")


def build(params: StructureParams, multiclass: bool) -> HeadLosses:
    """The structure loss of each head; the boundary weights are computed once per target.

    Args:
        params: the checked keys.
        multiclass: softmax / cross-entropy over class-index targets.

    Returns:
        Per-head losses.
    """

    def heads(outputs: Sequence[torch.Tensor], target: torch.Tensor) -> list[torch.Tensor]:
        weight = structure_weights(target, outputs[-1].shape[1], multiclass, params.boundary_kernel,
                                   params.boundary_gain)
        return [structure_loss(o, target, multiclass, weight) for o in outputs]

    return heads


SPEC = LossSpec(StructureParams, build, "pixel-weighted BCE + weighted IoU, boundaries weighted up", check)
