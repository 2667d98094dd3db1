"""Baselines: zero-shot prompted SAM-family predictors, prompt generators and the comparison.

* :mod:`.prompts` — boxes / points from masks (oracle or not), corrective clicks;
* :mod:`.sam_predictors` — ``create_predictor(name)``: LiteMedSAM, MobileSAM, SAM2/SAM2.1;
* :mod:`.session` — ``ClickSession``: one object's prompts and correction clicks on one embedded
  image (compare's ``iterative`` method and the labeling app);
* :mod:`.prompted` — ``run_prompted``: one image with one prompting strategy;
* :mod:`.compare` — ``run_compare``: every method on the same test cases, tables and plots;
* :mod:`.report` — the comparison's output files.

The CNN baselines (U-Net, DeepLabV3+) are trainable models: :mod:`s2unet.models.cnn`.
"""
from .compare import run_compare
from .prompted import STRATEGIES, PromptedResult, make_prompts, run_prompted, uses_ground_truth
from .prompts import (
    Click,
    Prompts,
    box_around_mask,
    boxes_per_component,
    farthest_interior_points,
    fixed_points_from_mean_mask,
    next_correction_click,
    prompts_from_draft,
)
from .sam_predictors import PromptedPredictor, create_predictor, predictor_names
from .session import ClickSession

__all__ = [
    "Click", "ClickSession", "PromptedPredictor", "PromptedResult", "Prompts", "STRATEGIES", "box_around_mask",
    "boxes_per_component", "create_predictor", "farthest_interior_points", "fixed_points_from_mean_mask",
    "make_prompts", "next_correction_click", "predictor_names", "prompts_from_draft", "run_compare",
    "run_prompted", "uses_ground_truth",
]
