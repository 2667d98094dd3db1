"""Run a prompted predictor on one 2D image with a prompt strategy (:mod:`s2unet.prompts.strategies`).

A volume is prompted slice by slice by the caller; an image (slice) without any prompt is
predicted empty without running the encoder.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Hashable, Optional

import numpy as np

from ..metrics import metric_row
from ..prompts import PromptInputs, PromptStrategy, Prompts, next_correction_click
from .sam_predictors import PromptedPredictor
from .session import ClickSession

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
        round_dice: correcting strategies (``iterative``) only: Dice after click 1, 2, ...
            (length ``rounds + 1``; once the prediction is perfect the last value repeats).
    """

    prob: np.ndarray
    uses_ground_truth: bool
    n_objects: int
    seconds: float
    embed_seconds: float = 0.0
    round_dice: list[float] = field(default_factory=list)


def _dice(prob: np.ndarray, gt: np.ndarray) -> float:
    return float(metric_row((prob >= THRESHOLD)[None], gt[None])["dice"])


def run_prompted(
    predictor: PromptedPredictor,
    image: np.ndarray,
    gt_or_draft: np.ndarray,
    strategy: PromptStrategy,
    rng: Optional[np.random.Generator] = None,
    fixed: Optional[Prompts] = None,
    image_key: Optional[Hashable] = None,
) -> PromptedResult:
    """Prompt one 2D image.

    Args:
        predictor: a zero-shot prompted predictor.
        image: (H, W) or (H, W, 3) image in 0..1.
        gt_or_draft: (H, W) mask the prompts come from: the reference mask, or another
            model's draft for a strategy that needs one. A correcting strategy also scores
            each round on it.
        strategy: the prompt strategy (:func:`~s2unet.prompts.create_strategy`).
        rng: random generator for box jitter.
        fixed: the fixed points of a strategy that needs training masks, in this image's frame.
        image_key: identity of the image for the predictor's embedding cache.

    Returns:
        The probability map and bookkeeping.
    """
    reference = np.asarray(gt_or_draft, dtype=bool)
    oracle = strategy.uses_ground_truth
    t0 = time.perf_counter()
    prompts = strategy.prompts(PromptInputs(reference, rng, fixed))
    if prompts.n_objects == 0:
        empty = np.zeros(reference.shape, dtype=np.float32)
        dice = [_dice(empty, reference)] * (strategy.rounds + 1) if strategy.corrects else []
        return PromptedResult(empty, oracle, 0, time.perf_counter() - t0, 0.0, dice)
    prompt_seconds = time.perf_counter() - t0
    session = ClickSession(predictor, image, key=image_key)
    t1 = time.perf_counter()
    prob = session.start(prompts)
    round_dice: list[float] = []
    if strategy.corrects:
        round_dice.append(_dice(prob, reference))
        for _ in range(strategy.rounds):
            click = next_correction_click(prob >= THRESHOLD, reference)
            if click is None:  # perfect: later clicks would change nothing
                round_dice.append(round_dice[-1])
                continue
            prob = session.click(click)
            round_dice.append(_dice(prob, reference))
    seconds = prompt_seconds + (time.perf_counter() - t1)
    return PromptedResult(prob, oracle, session.prompts.n_objects, seconds, session.embed_seconds, round_dice)
