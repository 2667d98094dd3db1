"""Prediction shared by validation (engine) and inference: the :class:`Predictor`, which runs a
model over images and volumes with exactly the training preprocessing, the binarisation and
channel names of a task, reference masks as channels, and post-processing.

It sits below both ``s2unet.engine`` and ``s2unet.inference`` so that neither imports the other.
"""
from .harmonise import CaseHarmoniser, harmonise
from .postprocess import fill_holes, keep_largest_components, postprocess, remove_small_components, restrict_to_region
from .predictor import Predictor, binarize, channel_names, foreground_names, load_case_target, load_masks

__all__ = [
    "CaseHarmoniser", "Predictor", "binarize", "channel_names", "fill_holes", "foreground_names", "harmonise", "keep_largest_components",
    "load_case_target", "load_masks", "postprocess", "remove_small_components", "restrict_to_region",
]
