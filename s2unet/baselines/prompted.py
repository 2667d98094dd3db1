"""Run a prompted predictor on one 2D image with a prompting strategy.

Strategies (``uses GT`` = prompts come from the test image's reference mask, an oracle):

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

A volume is prompted slice by slice by the caller; an image (slice) without any prompt is
predicted empty without running the encoder.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Hashable, Optional

import numpy as np

from ..metrics import metric_row
from .prompts import (
    Prompts,
    box_around_mask,
    boxes_per_component,
    farthest_interior_points,
    next_correction_click,
    prompts_from_draft,
)
from .sam_predictors import PromptedPredictor
from .session import ClickSession

STRATEGIES: dict[str, bool] = {
    # strategy -> prompts derived from the test image's ground truth
    "box_per_component": True,
    "box_whole": True,
    "points_farthest": True,
    "points_fixed_mean": False,
    "draft_boxes": False,
    "iterative": True,
}
THRESHOLD = 0.5


@dataclass
class PromptedResult:
    """The outcome of prompting one image.

    Attributes:
        prob: (H, W) float32 foreground probability.
        uses_ground_truth: the prompts came from the reference mask.
        n_objects: objects prompted (0: nothing prompted, empty prediction).
        seconds: wall time of prompting and decoding, the image embedding excluded.
        embed_seconds: what embedding the image cost (its original cost when the predictor
            served it from its cache, since the method alone would have paid it; 0 when
            nothing was prompted). Charge it once per image, however many channels.
        round_dice: ``iterative`` only: Dice after click 1, 2, ... (length ``rounds + 1``;
            once the prediction is perfect the last value repeats).
    """

    prob: np.ndarray
    uses_ground_truth: bool
    n_objects: int
    seconds: float
    embed_seconds: float = 0.0
    round_dice: list[float] = field(default_factory=list)


def uses_ground_truth(strategy: str) -> bool:
    """Whether a strategy's prompts come from the test image's reference mask."""
    try:
        return STRATEGIES[strategy]
    except KeyError:
        raise KeyError(f"unknown prompt strategy {strategy!r}; known: {', '.join(STRATEGIES)}") from None


def make_prompts(
    strategy: str,
    reference: np.ndarray,
    jitter: float = 0.0,
    rng: Optional[np.random.Generator] = None,
    fixed: Optional[Prompts] = None,
) -> Prompts:
    """The prompts of a one-shot (non-iterative) strategy for one image.

    Args:
        strategy: a key of :data:`STRATEGIES` other than ``iterative``.
        reference: (H, W) mask the prompts come from: the ground truth, or the draft mask
            for ``draft_boxes``; unused by ``points_fixed_mean``.
        jitter: box jitter (see :func:`~.prompts.boxes_per_component`).
        rng: random generator for the jitter.
        fixed: ``points_fixed_mean``: the data set's points already in this image's frame.

    Returns:
        The prompts.
    """
    if strategy == "box_per_component":
        return boxes_per_component(reference, jitter, rng)
    if strategy == "box_whole":
        return box_around_mask(reference, jitter, rng)
    if strategy == "points_farthest":
        return farthest_interior_points(reference)
    if strategy == "points_fixed_mean":
        if fixed is None:
            raise ValueError("points_fixed_mean needs the fixed points (fixed_points_from_mean_mask)")
        return fixed
    if strategy == "draft_boxes":
        return prompts_from_draft(reference).without_points()
    uses_ground_truth(strategy)  # raises for unknown names
    raise ValueError(f"{strategy!r} is not a one-shot strategy; use run_prompted")


def _dice(prob: np.ndarray, gt: np.ndarray) -> float:
    return float(metric_row((prob >= THRESHOLD)[None], gt[None])["dice"])


def run_prompted(
    predictor: PromptedPredictor,
    image: np.ndarray,
    gt_or_draft: np.ndarray,
    strategy: str,
    rounds: int = 5,
    jitter: float = 0.0,
    rng: Optional[np.random.Generator] = None,
    fixed: Optional[Prompts] = None,
    image_key: Optional[Hashable] = None,
) -> PromptedResult:
    """Prompt one 2D image.

    Args:
        predictor: a zero-shot prompted predictor.
        image: (H, W) or (H, W, 3) image in 0..1.
        gt_or_draft: (H, W) mask the prompts come from: the reference mask, or another
            model's draft for ``draft_boxes``. ``iterative`` also scores each round on it.
        strategy: a key of :data:`STRATEGIES`.
        rounds: ``iterative``: corrective clicks after the first click.
        jitter: box jitter for the box strategies.
        rng: random generator for the jitter.
        fixed: ``points_fixed_mean``: the points in this image's frame.
        image_key: identity of the image for the predictor's embedding cache.

    Returns:
        The probability map and bookkeeping.
    """
    reference = np.asarray(gt_or_draft, dtype=bool)
    oracle = uses_ground_truth(strategy)
    t0 = time.perf_counter()
    if strategy == "iterative":
        prompts = farthest_interior_points(reference)
        prompts = Prompts(None, prompts.points[:1], prompts.labels[:1], True) if prompts.n_objects else prompts
    else:
        prompts = make_prompts(strategy, reference, jitter, rng, fixed)
    if prompts.n_objects == 0:
        empty = np.zeros(reference.shape, dtype=np.float32)
        dice = [_dice(empty, reference)] * (rounds + 1) if strategy == "iterative" else []
        return PromptedResult(empty, oracle, 0, time.perf_counter() - t0, 0.0, dice)
    prompt_seconds = time.perf_counter() - t0
    session = ClickSession(predictor, image, key=image_key)
    t1 = time.perf_counter()
    prob = session.start(prompts)
    round_dice: list[float] = []
    if strategy == "iterative":
        round_dice.append(_dice(prob, reference))
        for _ in range(rounds):
            click = next_correction_click(prob >= THRESHOLD, reference)
            if click is None:  # perfect: later clicks would change nothing
                round_dice.append(round_dice[-1])
                continue
            prob = session.click(click)
            round_dice.append(_dice(prob, reference))
    seconds = prompt_seconds + (time.perf_counter() - t1)
    return PromptedResult(prob, oracle, session.prompts.n_objects, seconds, session.embed_seconds, round_dice)
