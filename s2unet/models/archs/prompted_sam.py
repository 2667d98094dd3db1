"""``prompted_sam``: a prompted SAM-family model fine-tuned from its checkpoint (:mod:`..prompted_sam`)."""
from __future__ import annotations

from ...config import ARCH_TRAITS
from ..base import SegmentationModel
from .base import Architecture, ModelArgs


def build(a: ModelArgs) -> SegmentationModel:
    from ..prompted_sam import create_prompted_sam  # loads sam2's modules

    return create_prompted_sam(a.encoder, a.weights, a.prompted, a.attention_lora, a.out_channels, a.image_size)


ARCH = Architecture("prompted_sam", build, ARCH_TRAITS["prompted_sam"], takes_image_size=True)
