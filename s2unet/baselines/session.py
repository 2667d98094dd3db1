"""The interactive prompt loop shared by ``compare``'s ``iterative`` method and the labeling app.

A :class:`ClickSession` is one object being segmented on one image: the image is embedded once
when the session starts, the first prompts (a box, a point, or nothing) give a first answer,
and each correction click adds one point and asks again, feeding the model's previous
low-resolution logits back as the mask prompt (SAM's own interactive loop). A mask that did not
come from the model (a draft of another model, a mask edited by hand) can be the mask prompt
of the first answer.
"""
from __future__ import annotations

import time
from typing import Hashable, Optional

import numpy as np

from ..prompts import Click, Prompts, empty_prompts
from .sam_predictors import PromptedPredictor


class ClickSession:
    """One object on one image: its prompts, its clicks and the model's last answer.

    Args:
        predictor: the prompted predictor; it may be shared with other sessions, since each
            call re-selects this session's image through the predictor's embedding cache.
        image: (H, W) or (H, W, 3) image in 0..1.
        key: the image's identity for the embedding cache (e.g. ``(case, slice)``); a
            session without a key re-embeds whenever another image was embedded in between.

    Attributes:
        embed_seconds: what embedding the image cost (its original cost when it was cached).
        prompts: the prompts so far (first prompts plus one point per click).
        clicks: the correction clicks so far.
        prob: (H, W) float32 foreground probability of the last answer, None before any.
        predict_seconds: wall time of the last prediction (prompt encoding, decoding and
            resizing; the embedding excluded).
    """

    def __init__(self, predictor: PromptedPredictor, image: np.ndarray, key: Optional[Hashable] = None) -> None:
        self.predictor = predictor
        self.image = image
        self.key = key
        self.embed_seconds = predictor.set_image(image, key=key)
        self.prompts: Prompts = empty_prompts(False)
        self.clicks: list[Click] = []
        self.prob: Optional[np.ndarray] = None
        self.predict_seconds = 0.0
        self._low_res: Optional[np.ndarray] = None

    def _predict(self, prompts: Prompts, mask_input: Optional[np.ndarray]) -> np.ndarray:
        self.predictor.set_image(self.image, key=self.key)  # a no-op unless another image came between
        t0 = time.perf_counter()
        prob, low_res = self.predictor.predict_prompts(prompts, mask_input=mask_input)
        self.predict_seconds = time.perf_counter() - t0
        # No object prompted gives no logits: the next click then starts without a mask prompt.
        self.prompts, self.prob, self._low_res = prompts, prob, (low_res if len(low_res) else None)
        return prob

    def start(self, prompts: Prompts, mask: Optional[np.ndarray] = None) -> np.ndarray:
        """Answer the first prompts; forgets earlier clicks.

        Args:
            prompts: the first prompts (no object gives an all-zero answer).
            mask: (H, W) mask of the object made elsewhere (another model's draft, a mask
                edited by hand), given to the model as its mask prompt; needs prompts of
                one object. None: no mask prompt.

        Returns:
            (H, W) float32 foreground probability.
        """
        mask_input = None
        if mask is not None:
            if prompts.n_objects != 1:
                raise ValueError(f"a mask prompt goes with the prompts of one object, got {prompts.n_objects}")
            mask_input = self.predictor.mask_prompt(mask)
        self.clicks = []
        return self._predict(prompts, mask_input)

    def click(self, click: Click) -> np.ndarray:
        """Add one correction click and answer again, the last answer's logits as mask prompt.

        Args:
            click: where, and whether it adds (label 1) or removes (label 0) foreground.

        Returns:
            (H, W) float32 foreground probability.
        """
        prompts = self.prompts.with_point(click.x, click.y, click.label, click.uses_ground_truth)
        self.clicks.append(click)
        return self._predict(prompts, self._low_res)
