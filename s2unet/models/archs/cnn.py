"""The CNN baselines ``unet`` and ``deeplabv3plus`` (:mod:`..cnn`): no encoder, any input size."""
from __future__ import annotations

from ...config import ARCH_TRAITS
from ..base import SegmentationModel
from .base import Architecture, ModelArgs


def _unet(a: ModelArgs) -> SegmentationModel:
    from ..cnn import create_unet

    return create_unet(a.out_channels, a.cnn_pretrained)


def _deeplabv3plus(a: ModelArgs) -> SegmentationModel:
    from ..cnn import create_deeplabv3plus

    return create_deeplabv3plus(a.out_channels, a.cnn_pretrained)


UNET = Architecture("unet", _unet, ARCH_TRAITS["unet"])
DEEPLABV3PLUS = Architecture("deeplabv3plus", _deeplabv3plus, ARCH_TRAITS["deeplabv3plus"])
