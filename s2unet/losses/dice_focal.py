"""``dice_focal``: MONAI's Dice + focal loss (``monai.losses.DiceFocalLoss``) on every head."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from monai.losses import DiceFocalLoss

from ..config import ranged
from .base import monai_spec


@dataclass
class DiceFocalParams:
    """The ``loss:`` keys of ``dice_focal``: MONAI's arguments of the same names."""

    gamma: float = ranged("[0, inf)", 2.0)  # focusing exponent; 0 is plain BCE / CE
    alpha: Optional[float] = ranged("[0, 1]", None)  # foreground balance of the focal term; none = off
    lambda_dice: float = ranged("[0, inf)", 1.0)
    lambda_focal: float = ranged("[0, inf)", 1.0)
    include_background: bool = True  # multiclass: class 0 in the Dice term too
    batch: bool = False  # Dice over the whole batch instead of per image


SPEC = monai_spec(DiceFocalLoss, DiceFocalParams, "Dice + focal loss (MONAI DiceFocalLoss)")
