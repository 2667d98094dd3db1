"""The interface of zero-shot prompted predictors: embed an image once (``set_image``), then
answer any number of prompts (``predict``), which iterative correction needs."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Hashable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..prompts import Prompts


def as_rgb01(image01: np.ndarray) -> np.ndarray:
    """An (H, W) or (H, W, 3) image in 0..1 as float32 (H, W, 3)."""
    img = np.asarray(image01, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {img.shape}")
    return img


def _as_objects(
    boxes: Optional[np.ndarray], points: Optional[np.ndarray], labels: Optional[np.ndarray]
) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """Normalise prompts to (K, 4) boxes, (K, N, 2) points and (K, N) labels."""
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if (points is None) != (labels is None):
        raise ValueError("points need labels and labels need points")
    if points is not None:
        points = np.asarray(points, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64)
        if points.ndim == 2:  # (N, 2): the points of one object
            points, labels = points[None], labels.reshape(1, -1)
        if points.ndim != 3 or points.shape[-1] != 2 or labels.shape != points.shape[:2]:
            raise ValueError(f"points must be (K, N, 2) with (K, N) labels, got {points.shape} and {labels.shape}")
        if boxes is not None and len(boxes) != len(points):
            raise ValueError(f"{len(boxes)} boxes but {len(points)} point groups: one of each per object")
    if boxes is None and points is None:
        raise ValueError("predict needs boxes or points")
    return boxes, points, labels


def _wants_multimask(boxes: Optional[np.ndarray], points: Optional[np.ndarray], mask_input: Optional[np.ndarray]) -> bool:
    """SAM's convention: one lone point is ambiguous, so take the best of three masks; a mask
    prompt removes the ambiguity (the point corrects that mask)."""
    return boxes is None and mask_input is None and points is not None and points.shape[1] == 1


# Magnitude of the logits a binary mask becomes as a mask prompt: SAM's own low-resolution
# logits of a confident answer sit around +-10 away from the object's border.
MASK_PROMPT_LOGIT = 10.0


class PromptedPredictor(ABC):
    """Embed an image once, then predict masks for prompts.

    Attributes:
        name: registry name.
        trainable_parameters: 0 (zero-shot).
        max_objects_per_batch: objects decoded together (memory bound for many prompts).
        low_res_size: side r of the low-resolution logits (256 at the models' own sizes).
    """

    name: str = "prompted"
    trainable_parameters: int = 0
    max_objects_per_batch: int = 16
    low_res_size: int = 256  # side of the decoder's low-res logits: 4 x the 64 x 64 embedding

    def __init__(self) -> None:
        self._key: Optional[Hashable] = None
        self._embed_seconds = 0.0
        self._hw: Optional[tuple[int, int]] = None

    def set_image(self, image01: np.ndarray, key: Optional[Hashable] = None) -> float:
        """Embed an image (skipped when ``key`` names the image embedded last).

        Args:
            image01: (H, W) or (H, W, 3) image in 0..1.
            key: an identity for the image (e.g. ``(case, slice)``); with the key of the
                current image the cached embedding is kept.

        Returns:
            The seconds the embedding took (the original time when served from the cache), so
            callers can charge it to every method that needs it.
        """
        if key is not None and key == self._key:
            return self._embed_seconds
        img = as_rgb01(image01)
        t0 = time.perf_counter()
        self._embed(img)
        self._embed_seconds = time.perf_counter() - t0
        self._key, self._hw = key, img.shape[:2]
        return self._embed_seconds

    def predict(
        self,
        boxes: Optional[np.ndarray] = None,
        points: Optional[np.ndarray] = None,
        labels: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Segment K objects on the current image.

        Args:
            boxes: (K, 4) or (4,) boxes ``[x0, y0, x1, y1]`` in image pixels.
            points: (K, N, 2) points ``(x, y)`` in image pixels, or (N, 2) for one object.
            labels: (K, N) / (N,) point labels, 1 foreground, 0 background.
            mask_input: (K, 1, r, r) low-resolution logits of a previous ``predict``.

        Returns:
            ``(prob, low_res_logits)``: (H, W) float32 foreground probability, the maximum
            over the K objects (their union at 0.5), and (K, 1, r, r) logits (r =
            ``low_res_size``). A lone point per object returns the best of SAM's three masks
            by predicted IoU.
        """
        if self._hw is None:
            raise RuntimeError("call set_image before predict")
        boxes, points, labels = _as_objects(boxes, points, labels)
        k = len(boxes) if boxes is not None else len(points)
        if mask_input is not None:
            r = self.low_res_size
            mask_input = np.asarray(mask_input, dtype=np.float32).reshape(-1, 1, r, r)
            if len(mask_input) != k:
                raise ValueError(f"mask_input holds {len(mask_input)} masks for {k} objects")
        multimask = _wants_multimask(boxes, points, mask_input)
        prob: Optional[np.ndarray] = None
        low_res = []
        # Objects go through the decoder in chunks: a draft mask full of speckle can ask for
        # hundreds of boxes, and each object costs a full-size copy of the image embedding.
        for start in range(0, k, self.max_objects_per_batch):
            part = slice(start, start + self.max_objects_per_batch)
            logits, low = self._predict(
                boxes[part] if boxes is not None else None,
                points[part] if points is not None else None,
                labels[part] if labels is not None else None,
                mask_input[part] if mask_input is not None else None,
                multimask,
            )
            chunk = torch.sigmoid(torch.from_numpy(logits)).amax(dim=0).numpy()
            prob = chunk if prob is None else np.maximum(prob, chunk)
            low_res.append(low)
        assert prob is not None
        return prob.astype(np.float32), np.concatenate(low_res)

    def predict_prompts(
        self, prompts: Prompts, mask_input: Optional[np.ndarray] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` for a :class:`Prompts`; no object gives an all-zero probability."""
        if prompts.n_objects == 0:
            assert self._hw is not None, "call set_image before predict_prompts"
            r = self.low_res_size
            return np.zeros(self._hw, dtype=np.float32), np.zeros((0, 1, r, r), np.float32)
        return self.predict(prompts.boxes, prompts.points, prompts.labels, mask_input)

    def mask_prompt(self, mask: np.ndarray) -> np.ndarray:
        """A mask made elsewhere (a draft, a hand-edited mask) as this model's mask prompt.

        Args:
            mask: (H, W) mask of the current image (bool, or 0..1 coverage).

        Returns:
            (1, 1, r, r) float32 logits, +-:data:`MASK_PROMPT_LOGIT` inside / outside, for
            ``predict(..., mask_input=...)``.
        """
        if self._hw is None:
            raise RuntimeError("call set_image before mask_prompt")
        m = np.asarray(mask, dtype=np.float32)
        if m.shape != self._hw:
            raise ValueError(f"mask shape {m.shape} differs from the image's {self._hw}")
        coverage = self._mask_to_low_res(torch.from_numpy(np.ascontiguousarray(m))[None, None])
        return ((coverage * 2.0 - 1.0) * MASK_PROMPT_LOGIT).numpy().astype(np.float32)

    def _mask_to_low_res(self, mask: torch.Tensor) -> torch.Tensor:
        """(1, 1, H, W) coverage -> (1, 1, r, r) coverage in the model's low-resolution frame.

        This default is SAM2's frame: the image resized to the square input without keeping
        its aspect. Models that pad (SAM1) override it.
        """
        r = self.low_res_size
        return F.interpolate(mask, size=(r, r), mode="area")

    @abstractmethod
    def _embed(self, image: np.ndarray) -> None:
        """Compute and keep the embedding of an (H, W, 3) float32 image in 0..1."""

    @abstractmethod
    def _predict(
        self,
        boxes: Optional[np.ndarray],
        points: Optional[np.ndarray],
        labels: Optional[np.ndarray],
        mask_input: Optional[np.ndarray],
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Returns (K, H, W) logits at image size and (K, 1, r, r) low-res logits."""
