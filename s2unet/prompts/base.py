"""What every prompt strategy builds on: the base class, its inputs and the shared parameters.

A strategy is a :class:`PromptStrategy` subclass; the registry (:data:`~.strategies.STRATEGIES`)
imports the strategies, never the reverse, so a new strategy can live in its own file that
imports this module and be registered by one line there.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from ..config import ranged
from .geometry import Prompts


@dataclass
class NoParams:
    """A strategy without keys of its own."""


@dataclass
class BoxParams:
    """Box strategies: random shift of each box side, in box-side units (0 = exact boxes)."""

    jitter: float = ranged("[0, inf)", 0.0)


@dataclass(frozen=True)
class PromptInputs:
    """What a strategy may make its prompts from, for one image and one label channel.

    Attributes:
        reference: (H, W) bool: the reference mask, or the draft for strategies that
            ``need_draft``; an empty mask gets no prompt.
        rng: random generator (box jitter).
        fixed: strategies that ``need_training_masks``: their points in this image's frame.
    """

    reference: np.ndarray
    rng: Optional[np.random.Generator] = None
    fixed: Optional[Prompts] = None


class PromptStrategy(ABC):
    """One way of prompting; an instance carries its checked parameters.

    Class attributes:
        uses_ground_truth: the prompts come from the test image's reference mask (oracle).
        needs_draft: the reference it is given is another model's draft (its ``draft`` key).
        needs_training_masks: it is given fixed points from the mean training mask.
        Params: the dataclass of its own keys.

    Args:
        params: an instance of ``Params`` (defaults when None).
    """

    uses_ground_truth: ClassVar[bool] = True
    needs_draft: ClassVar[bool] = False
    needs_training_masks: ClassVar[bool] = False
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any = None) -> None:
        self.params = self.Params() if params is None else params

    @property
    def rounds(self) -> int:
        """Corrective clicks after the first prompts (0: a one-shot strategy)."""
        return 0

    @property
    def corrects(self) -> bool:
        """Whether it is an interactive strategy (its result records the Dice after each click)."""
        return False

    @abstractmethod
    def prompts(self, inputs: PromptInputs) -> Prompts:
        """The first prompts for one image (all of them for a one-shot strategy)."""

    def describe(self) -> str:
        """Its parameters for a method description, e.g. ``", jitter 0.1"`` (empty: nothing to say)."""
        return ""


__all__ = ["BoxParams", "NoParams", "PromptInputs", "PromptStrategy"]
