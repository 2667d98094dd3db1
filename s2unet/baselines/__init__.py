"""Baselines: zero-shot prompted SAM-family predictors and the comparison.

Their prompts (geometry and the strategy registry) live in :mod:`s2unet.prompts`.

* :mod:`.sam_predictors` — the predictor registry, ``create_predictor(name)``: LiteMedSAM,
  MobileSAM, SAM2/SAM2.1 (:mod:`.predictor_base`, :mod:`.sam1_predictor`, :mod:`.sam2_predictor`);
* :mod:`.session` — ``ClickSession``: one object's prompts and correction clicks on one embedded
  image (compare's ``iterative`` method and the labeling app);
* :mod:`.prompted` — ``run_prompted``: one image with one prompt strategy;
* :mod:`.compare` — ``run_compare``: every method on the same test cases, tables and plots
  (:mod:`.compare_config`, :mod:`.compare_data`, :mod:`.compare_methods`);
* :mod:`.report` — the comparison's output files.

The CNN baselines (U-Net, DeepLabV3+) are trainable models: :mod:`s2unet.models.cnn`.
"""
from .compare import run_compare
from .prompted import PromptedResult, run_prompted
from .sam_predictors import PREDICTORS, PromptedPredictor, create_predictor, predictor_names
from .session import ClickSession

__all__ = [
    "PREDICTORS", "ClickSession", "PromptedPredictor", "PromptedResult", "create_predictor", "predictor_names",
    "run_compare", "run_prompted",
]
