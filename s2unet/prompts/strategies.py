"""Prompt strategies behind a registry: how a zero-shot prompted model is prompted on one image.

Each strategy is one small class: it declares whether its prompts come from the test image's
reference mask (an oracle), what else it needs (another model's draft, the training masks), its
own parameters (a dataclass whose numbers are :func:`~s2unet.config.ranged`), and it makes its
prompts. The base class, its inputs and the shared parameters live in :mod:`.base`,
which imports nothing from here: adding a strategy is one file (or a class here) plus its
line in :data:`STRATEGIES`.

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

from dataclasses import dataclass
from typing import Any, Optional

from ..config import ConfigError, build_params, check_registered, ranged
from .geometry import Prompts, box_around_mask, boxes_per_component, farthest_interior_points, prompts_from_draft
from .base import BoxParams, PromptInputs, PromptStrategy


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
