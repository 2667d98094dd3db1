"""Prompts for SAM-family models: one system for prompted-SAM training, ``compare`` and the app.

* :mod:`.geometry` — ``Prompts`` and what makes them from masks: boxes, interior points, the
  mean training mask's fixed points, corrective clicks;
* :mod:`.base` — what a strategy subclasses (``PromptStrategy``, ``PromptInputs``, ``BoxParams``);
* :mod:`.strategies` — the strategy registry (``STRATEGIES``, ``create_strategy``).

It sits below ``models`` and imports only ``config``, so the models (prompted SAM) and the
baselines draw their prompts from the same code.
"""
from .base import BoxParams, NoParams, PromptInputs, PromptStrategy
from .geometry import (
    Click,
    Prompts,
    box_around_mask,
    boxes_per_component,
    empty_prompts,
    farthest_interior_points,
    fixed_points_from_mean_mask,
    fixed_points_in_region,
    mean_mask_region,
    next_correction_click,
    prompts_from_draft,
    region_of_mean_mask,
)
from .strategies import STRATEGIES, create_strategy

__all__ = [
    "STRATEGIES", "BoxParams", "Click", "NoParams", "PromptInputs", "PromptStrategy", "Prompts", "box_around_mask",
    "boxes_per_component", "create_strategy", "empty_prompts", "farthest_interior_points",
    "fixed_points_from_mean_mask", "fixed_points_in_region", "mean_mask_region", "next_correction_click",
    "prompts_from_draft", "region_of_mean_mask",
]
