"""Segmentation losses applied to every deep-supervision output, behind a registry.

``loss: {name: structure | dice_focal | dice_ce, <that loss's own keys>}``; see
:mod:`.registry` for adding one (one file plus one registry line).
"""
from .base import LossSpec
from .registry import LOSSES, build_loss, loss_names, loss_params
from .structure import boundary_weights, structure_loss, structure_weights

__all__ = ["LOSSES", "LossSpec", "boundary_weights", "build_loss", "loss_names", "loss_params", "structure_loss",
           "structure_weights"]
