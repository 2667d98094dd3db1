"""Baselines: zero-shot prompted SAM-family predictors, prompt generators and the comparison.

* :mod:`.prompts` — boxes / points from masks (oracle or not), corrective clicks;
* :mod:`.sam_predictors` — the predictor registry, ``create_predictor(name)``: LiteMedSAM,
  MobileSAM, SAM2/SAM2.1 (:mod:`.predictor_base`, :mod:`.sam1_predictor`, :mod:`.sam2_predictor`);
* :mod:`.session` — ``ClickSession``: one object's prompts and correction clicks on one embedded
  image (compare's ``iterative`` method and the labeling app);
* :mod:`.strategies` — the prompt-strategy registry (``STRATEGIES``, ``create_strategy``);
  :mod:`.strategy_base` — what a strategy subclasses (``PromptStrategy``, ``PromptInputs``);
* :mod:`.prompted` — ``run_prompted``: one image with one prompt strategy;
* :mod:`.compare` — ``run_compare``: every method on the same test cases, tables and plots
  (:mod:`.compare_config`, :mod:`.compare_data`, :mod:`.compare_methods`);
* :mod:`.report` — the comparison's output files.

The CNN baselines (U-Net, DeepLabV3+) are trainable models: :mod:`s2unet.models.cnn`.
"""
from .compare import run_compare
from .prompted import PromptedResult, run_prompted
from ..data.prompts import (
    Click,
    Prompts,
    box_around_mask,
    boxes_per_component,
    farthest_interior_points,
    fixed_points_from_mean_mask,
    next_correction_click,
    prompts_from_draft,
)
from .sam_predictors import PREDICTORS, PromptedPredictor, create_predictor, predictor_names
from .session import ClickSession
from .strategies import STRATEGIES, create_strategy
from .strategy_base import PromptInputs, PromptStrategy

__all__ = [
    "PREDICTORS", "STRATEGIES", "Click", "ClickSession", "PromptInputs", "PromptStrategy", "PromptedPredictor",
    "PromptedResult", "Prompts", "box_around_mask", "boxes_per_component", "create_predictor", "create_strategy",
    "farthest_interior_points", "fixed_points_from_mean_mask", "next_correction_click", "predictor_names",
    "prompts_from_draft", "run_compare", "run_prompted",
]
