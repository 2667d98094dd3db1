"""Prompt generators for SAM-family predictors; they live in :mod:`s2unet.data.prompts` so that
fine-tuning (:mod:`s2unet.models.prompted_sam`) can draw its training prompts from them."""
from ..data.prompts import (
    Click,
    Prompts,
    box_around_mask,
    boxes_per_component,
    empty_prompts,
    farthest_interior_points,
    fixed_points_from_mean_mask,
    mean_mask_region,
    next_correction_click,
    prompts_from_draft,
)

__all__ = [
    "Click", "Prompts", "box_around_mask", "boxes_per_component", "empty_prompts", "farthest_interior_points",
    "fixed_points_from_mean_mask", "mean_mask_region", "next_correction_click", "prompts_from_draft",
]
