"""Prompt strategies behind a registry: how a zero-shot prompted model is prompted on one image.

Each strategy is one small class: it declares whether its prompts come from the test image's
reference mask (an oracle), what else it needs (another model's draft, the training masks), its
own parameters (a dataclass whose numbers are :func:`~s2unet.config.ranged`), and it makes its
prompts. Adding one is a class here plus one line in :data:`STRATEGIES`.

====================  =======  ==========================================================
strategy              uses GT  prompts
====================  =======  ==========================================================
box_per_component     yes      one box per connected component, masks united
box_whole             yes      one box around all foreground
points_farthest       yes      one point per component, at its most interior pixel
points_fixed_mean     no       the same points on every image, from the mean training mask
draft_boxes           no       one box per component of another model's draft mask
iterative             yes      the most interior point of the largest component, then up to
                               ``rounds`` corrective clicks (centre of the largest error
                               region), each round fed the previous low-res logits
====================  =======  ==========================================================
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from ..config import ConfigError, build_params, check_registered, ranged
from ..data.prompts import Prompts, box_around_mask, boxes_per_component, farthest_interior_points, prompts_from_draft


@dataclass
class NoParams:
    """A strategy without keys of its own."""


@dataclass
class BoxParams:
    """Box strategies: random shift of each box side, in box-side units (0 = exact boxes)."""

    jitter: float = ranged("[0, inf)", 0.0)


@dataclass
class FixedPointsParams:
    """``points_fixed_mean``: points per image, from the mean training mask."""

    n_points: int = ranged("[1, inf)", 2)


@dataclass
class DraftParams:
    """``draft_boxes``: the trained checkpoint whose prediction is the draft (required)."""

    draft: str = ""


@dataclass
class IterativeParams:
    """``iterative``: corrective clicks after the first click."""

    rounds: int = ranged("[0, inf)", 5)


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


class BoxPerComponent(PromptStrategy):
    """One box per connected component of the reference, the masks united."""

    Params = BoxParams

    def prompts(self, inputs: PromptInputs) -> Prompts:
        return boxes_per_component(inputs.reference, self.params.jitter, inputs.rng)

    def describe(self) -> str:
        return f", jitter {self.params.jitter:g}" if self.params.jitter else ""


class BoxWhole(BoxPerComponent):
    """One box around all foreground."""

    def prompts(self, inputs: PromptInputs) -> Prompts:
        return box_around_mask(inputs.reference, self.params.jitter, inputs.rng)


class PointsFarthest(PromptStrategy):
    """One positive point per component, at its most interior pixel."""

    def prompts(self, inputs: PromptInputs) -> Prompts:
        return farthest_interior_points(inputs.reference)


class PointsFixedMean(PromptStrategy):
    """The same points on every image, from the mean training mask (no ground truth)."""

    uses_ground_truth = False
    needs_training_masks = True
    Params = FixedPointsParams

    def prompts(self, inputs: PromptInputs) -> Prompts:
        if inputs.fixed is None:
            raise ValueError("points_fixed_mean needs the fixed points (fixed_points_from_mean_mask)")
        return inputs.fixed

    def describe(self) -> str:
        return f", {self.params.n_points} points"


class DraftBoxes(PromptStrategy):
    """One box per component of another model's draft mask (no ground truth)."""

    uses_ground_truth = False
    needs_draft = True
    Params = DraftParams

    def prompts(self, inputs: PromptInputs) -> Prompts:
        return prompts_from_draft(inputs.reference).without_points()

    def describe(self) -> str:
        return f", draft from {self.params.draft}"


class IterativeClicks(PromptStrategy):
    """The most interior point of the largest component, then ``rounds`` corrective clicks."""

    Params = IterativeParams

    @property
    def rounds(self) -> int:
        return self.params.rounds

    @property
    def corrects(self) -> bool:
        return True

    def prompts(self, inputs: PromptInputs) -> Prompts:
        first = farthest_interior_points(inputs.reference)
        return Prompts(None, first.points[:1], first.labels[:1], True) if first.n_objects else first

    def describe(self) -> str:
        return f", {self.params.rounds} corrective clicks"


STRATEGIES: dict[str, type[PromptStrategy]] = {
    "box_per_component": BoxPerComponent,
    "box_whole": BoxWhole,
    "points_farthest": PointsFarthest,
    "points_fixed_mean": PointsFixedMean,
    "draft_boxes": DraftBoxes,
    "iterative": IterativeClicks,
}


def create_strategy(name: str, values: Optional[dict[str, Any]] = None, key: str = "prompt") -> PromptStrategy:
    """A registered strategy with its keys checked like config keys.

    Args:
        name: a key of :data:`STRATEGIES`.
        values: its own keys, e.g. ``{"jitter": 0.1}``.
        key: where the keys sit in the config, named in messages (``methods[2]``).

    Returns:
        The strategy.

    Raises:
        ConfigError: an unknown name or key (with the closest valid one), a wrong type, a value
            out of range, or a ``draft_boxes`` without its draft.
    """
    check_registered(name, STRATEGIES, f"{key}.prompt", "prompt strategy")
    cls = STRATEGIES[name]
    params = build_params(cls.Params, dict(values or {}), f"{key}.", f"prompt {name}")
    if cls.needs_draft and not params.draft:
        raise ConfigError(f"{key}: prompt {name} and the draft checkpoint go together: give draft")
    return cls(params)
