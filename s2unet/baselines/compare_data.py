"""The comparison's test cases as stacks of 2D planes, and the training masks of the
fixed-point strategy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from ..data import Case, prepare_image, prepare_slice, read_case, volume_value_range
from ..io.formats import is_slice_stack
from ..predict import load_masks


@dataclass
class EvalCase:
    """One test case as a stack of 2D planes (S = 1 for an image).

    Attributes:
        case: the dataset case.
        gt: (C, S, H, W) bool reference of the evaluated planes.
        planes: slice indices along the data axis (``[0]`` for images).
        spacing: volumes: voxel size of the (S, H, W) stack; None for images.
        volume: volumes: the served, decoded image array.
        gray: images: the (H, W) image in 0..1 as read (NaN handled by ``prepare_image``).
    """

    case: Case
    gt: np.ndarray
    planes: list[int]
    spacing: Optional[tuple[float, float, float]] = None
    volume: Optional[np.ndarray] = None
    gray: Optional[np.ndarray] = None
    _value_range: Optional[tuple[float, float]] = None

    @property
    def is_volume(self) -> bool:
        return self.volume is not None

    def value_range(self) -> tuple[float, float]:
        """Volumes: the value range of the decoded volume (computed once)."""
        assert self.volume is not None, "value_range is a volume's"
        if self._value_range is None:
            self._value_range = volume_value_range(self.volume)
        return self._value_range

    def inputs(self, data: DataConfig) -> np.ndarray:
        """(S, 3, H, W) float32 model inputs in 0..1, prepared as ``data`` prescribes (window,
        2.5D context, normalisation) at native size."""
        if self.volume is None:
            return prepare_image(self.gray, data.normalize)[None]
        return np.stack([prepare_slice(self.volume, k, data, self.value_range()) for k in self.planes])


def middle_block(n: int, max_planes: int) -> list[int]:
    """A contiguous block of ``max_planes`` slice indices from the middle of ``n`` (all if 0)."""
    if max_planes <= 0 or max_planes >= n:
        return list(range(n))
    start = (n - max_planes) // 2
    return list(range(start, start + max_planes))


def load_eval_case(case: Case, data: DataConfig, max_planes: int) -> EvalCase:
    """Read a test case's image and reference (binary / multilabel channels).

    Args:
        case: the dataset case.
        data: the comparison's data config.
        max_planes: volumes: slices kept (see :func:`middle_block`).

    Returns:
        The EvalCase.
    """
    gt = load_masks(case.labels, data)
    vol = read_case(case.image, data.kind, data.served)
    if vol.planar:
        return EvalCase(case, gt[:, None], [0], gray=vol.picture())
    axis = data.axis
    planes = middle_block(vol.shape[axis], max_planes)
    stack = np.moveaxis(np.take(gt, planes, axis=axis + 1), axis + 1, 1)
    zooms = vol.zooms
    spacing = (zooms[axis], *[z for a, z in enumerate(zooms) if a != axis])
    return EvalCase(case, stack, planes, spacing=spacing, volume=vol.get_array())


def slice_stacks(cases: list[Case]) -> bool:
    """Whether the cases are volumes cut into slices rather than 2D pictures, as their files'
    formats say (:func:`~s2unet.io.formats.is_slice_stack`; one data set holds one kind)."""
    return any(is_slice_stack(c.image) for c in cases)


def display(array: np.ndarray, is_volume: bool) -> np.ndarray:
    """A served CT slice the usual way up (transposed, see the data README); images as read.
    Works on (H, W) masks and (H, W, 3) images; applying it twice restores the input."""
    return np.swapaxes(array, 0, 1) if is_volume else array


def _spread(items: list, limit: int) -> list:
    """Up to ``limit`` items, evenly spread over the list."""
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def training_masks(cases: list[Case], data: DataConfig, limit: int) -> np.ndarray:
    """Up to ``limit`` training masks (images or slices), evenly spread, in display orientation.

    Args:
        cases: the training cases.
        data: the data config.
        limit: most masks returned.

    Returns:
        (M, C, H, W) bool, every mask resized (nearest) to the first one's size.
    """
    is_volume = slice_stacks(cases)
    planes: list[np.ndarray] = []  # (C, H, W) each
    for case in cases if is_volume else _spread(cases, limit):
        gt = load_masks(case.labels, data)
        planes += list(np.moveaxis(gt, data.axis + 1, 0)) if is_volume else [gt]
    if not planes:
        raise ValueError("no training cases to average masks over")
    chosen = [np.stack([display(c, is_volume) for c in p]) for p in _spread(planes, limit)]
    size = chosen[0].shape[-2:]
    return np.stack([p if p.shape[-2:] == size else _resize_masks(p, size) for p in chosen])


def _resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) bool -> (C, *size) bool, nearest neighbour (pixel centres, as the datasets)."""
    t = torch.from_numpy(masks.astype(np.float32))[None]
    return F.interpolate(t, size=tuple(size), mode="nearest-exact")[0].numpy() > 0.5
