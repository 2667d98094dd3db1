"""Architecture registry: ``get_architecture(cfg.model.arch)`` gives its builder and capabilities.

Adding an architecture is one new module here defining an :class:`Architecture` plus its line
below (docs/extending.md).
"""
from __future__ import annotations

from . import cnn, prompted_sam, s2unet
from .base import Architecture, ModelArgs, get_architecture, register_architecture

for _entry in (s2unet.ARCH, cnn.UNET, cnn.DEEPLABV3PLUS, prompted_sam.ARCH):
    register_architecture(_entry)

__all__ = ["Architecture", "ModelArgs", "get_architecture", "register_architecture"]
