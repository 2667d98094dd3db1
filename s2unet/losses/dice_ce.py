"""``dice_ce``: MONAI's Dice + cross-entropy loss (``monai.losses.DiceCELoss``) on every head."""
from __future__ import annotations

from dataclasses import dataclass

from monai.losses import DiceCELoss

from ..config import ranged
from .base import monai_spec


@dataclass
class DiceCEParams:
    """The ``loss:`` keys of ``dice_ce``: MONAI's arguments of the same names."""

    lambda_dice: float = ranged("[0, inf)", 1.0)
    lambda_ce: float = ranged("[0, inf)", 1.0)
    include_background: bool = True  # multiclass: class 0 in the Dice term too
    batch: bool = False  # Dice over the whole batch instead of per image


SPEC = monai_spec(DiceCELoss, DiceCEParams, "Dice + cross-entropy (MONAI DiceCELoss)")
