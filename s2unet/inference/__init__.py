"""Inference: slice-wise prediction with the training preprocessing, geometry-preserving
writing, post-processing, reports, overlays, and evaluation against ground truth.

Typical use::

    from s2unet.inference import InferenceOptions, run_inference, evaluate
    summary = run_inference("runs/covid/best.pt", "scans/", "out/", InferenceOptions(gt="masks/"))
    evaluate("out/", "masks/")
"""
from .evaluate import ReferenceIndex, evaluate, find_predictions
from .overlay import image_overlay, pick_slices, save_overlay, volume_overlay
from ..predict import postprocess, remove_small_components, restrict_to_region
from ..predict import Predictor, binarize, channel_names, foreground_names, load_case_target, load_masks
from .report import case_report, voxel_volume_ml
from .run import InferenceOptions, run_inference

__all__ = [
    "Predictor", "ReferenceIndex", "binarize", "case_report", "channel_names", "evaluate", "find_predictions",
    "foreground_names", "image_overlay", "load_case_target", "load_masks", "pick_slices", "postprocess",
    "remove_small_components", "restrict_to_region", "InferenceOptions", "run_inference", "save_overlay", "volume_overlay",
    "voxel_volume_ml",
]
