"""Prompt generators for SAM-family predictors, from masks of one 2D image.

Conventions:

* masks are (H, W) boolean numpy arrays; connected components use full (8-)connectivity, as
  in :mod:`s2unet.predict.postprocess`, so diagonally touching pixels form one object;
* a box is ``[x0, y0, x1, y1]`` in pixel indices, inclusive (``x1`` is the column of the
  right-most foreground pixel), SAM's and MedSAM's convention;
* a point is ``(x, y)`` = (column, row) in pixels; label 1 is foreground, 0 background;
* every :class:`Prompts` records whether it was derived from the test image's ground truth
  (an oracle prompt, which a deployed system would not have) or not.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

_FULL_2D = ndimage.generate_binary_structure(2, 2)


@dataclass(frozen=True)
class Prompts:
    """Prompts for K objects of one image; the prediction is the union of the K objects.

    Attributes:
        boxes: (K, 4) float boxes ``[x0, y0, x1, y1]``, or None.
        points: (K, N, 2) float ``(x, y)`` points, N per object, or None.
        labels: (K, N) int point labels (1 foreground, 0 background), with ``points``.
        uses_ground_truth: derived from the test image's reference mask (oracle).
    """

    boxes: Optional[np.ndarray]
    points: Optional[np.ndarray]
    labels: Optional[np.ndarray]
    uses_ground_truth: bool

    def __post_init__(self) -> None:
        if (self.points is None) != (self.labels is None):
            raise ValueError("points and labels go together")
        if self.points is not None and self.points.shape[:2] != self.labels.shape:
            raise ValueError(f"points {self.points.shape} and labels {self.labels.shape} disagree")
        if self.boxes is not None and self.points is not None and len(self.boxes) != len(self.points):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.points)} point groups")

    @property
    def n_objects(self) -> int:
        """K, the number of objects prompted (0 = nothing to segment)."""
        if self.boxes is not None:
            return len(self.boxes)
        return 0 if self.points is None else len(self.points)

    def without_points(self) -> "Prompts":
        """The same prompts with the boxes only."""
        return replace(self, points=None, labels=None)

    def with_point(self, x: float, y: float, label: int, uses_ground_truth: bool = True) -> "Prompts":
        """Add one point to every object (interactive correction of a single object).

        Args:
            x: column.
            y: row.
            label: 1 foreground, 0 background.
            uses_ground_truth: whether the new point came from the reference mask.

        Returns:
            New prompts with N + 1 points per object.
        """
        k = max(1, self.n_objects)
        point = np.tile(np.array([[[x, y]]], dtype=np.float32), (k, 1, 1))
        label_arr = np.full((k, 1), label, dtype=np.int64)
        points = point if self.points is None else np.concatenate([self.points, point], axis=1)
        labels = label_arr if self.labels is None else np.concatenate([self.labels, label_arr], axis=1)
        return replace(self, points=points, labels=labels,
                       uses_ground_truth=self.uses_ground_truth or uses_ground_truth)

    def rescaled(self, from_shape: tuple[int, int], to_shape: tuple[int, int]) -> "Prompts":
        """The prompts moved from an image of ``from_shape`` (H, W) to one of ``to_shape``.

        Pixel centres are mapped onto pixel centres, so a point in the middle stays there.
        """
        sy, sx = to_shape[0] / from_shape[0], to_shape[1] / from_shape[1]
        scale_xy = np.array([sx, sy], dtype=np.float32)

        def move(xy: np.ndarray, size: np.ndarray) -> np.ndarray:
            return np.clip((xy + 0.5) * scale_xy - 0.5, 0, size - 1)

        limit = np.array([to_shape[1], to_shape[0]], dtype=np.float32)
        boxes = None
        if self.boxes is not None:
            boxes = move(self.boxes.reshape(-1, 2, 2), limit).reshape(-1, 4)
        points = move(self.points, limit) if self.points is not None else None
        return replace(self, boxes=boxes, points=points)


def empty_prompts(uses_ground_truth: bool) -> Prompts:
    """Prompts for no object (the prediction is empty)."""
    return Prompts(None, None, None, uses_ground_truth)


def _components(mask: np.ndarray) -> tuple[np.ndarray, list[tuple[slice, slice]], np.ndarray]:
    """Label the components of a mask, largest first.

    Returns:
        The label image, one bounding slice per component and the areas, each ordered by
        decreasing area (ties keep scan order), so label ``order[i] + 1`` is component i.
    """
    labels, n = ndimage.label(np.asarray(mask, dtype=bool), structure=_FULL_2D)
    if n == 0:
        return labels, [], np.zeros(0, dtype=np.int64)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-areas, kind="stable")
    slices = ndimage.find_objects(labels)
    # Relabel so that component i (largest first) has label i + 1.
    remap = np.zeros(n + 1, dtype=labels.dtype)
    remap[order + 1] = np.arange(1, n + 1)
    return remap[labels], [slices[i] for i in order], areas[order]


def _box(sl: tuple[slice, slice]) -> np.ndarray:
    return np.array([sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1], dtype=np.float32)


def _jitter_boxes(
    boxes: np.ndarray, jitter: float, rng: Optional[np.random.Generator], shape: tuple[int, int]
) -> np.ndarray:
    """Shift each side of each box by up to ``jitter`` times the box's side, inside the image."""
    if jitter <= 0 or len(boxes) == 0:
        return boxes
    rng = rng if rng is not None else np.random.default_rng(0)
    # Side lengths as pixel counts (x1 is inclusive), for x then y sides.
    sides = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], axis=1)
    shift = rng.uniform(-jitter, jitter, size=boxes.shape) * np.tile(sides, 2)
    out = boxes + shift
    h, w = shape
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h - 1)
    # Large shifts may cross the sides over; keep x0 <= x1 and y0 <= y1.
    lo, hi = np.minimum(out[:, :2], out[:, 2:]), np.maximum(out[:, :2], out[:, 2:])
    return np.concatenate([lo, hi], axis=1).astype(np.float32)


def boxes_per_component(
    mask: np.ndarray, jitter: float = 0.0, rng: Optional[np.random.Generator] = None, min_area: int = 1
) -> Prompts:
    """One box per connected component (oracle: from the reference mask).

    Args:
        mask: (H, W) reference mask.
        jitter: each side moves by a uniform random shift of up to ``jitter`` times the box
            side (width for x sides, height for y sides), as robustness studies of box-prompted
            models do; clipped to the image.
        rng: random generator for the jitter (a fixed-seed one when None, so runs repeat).
        min_area: components smaller than this many pixels get no box.

    Returns:
        K boxes, largest component first.
    """
    _, slices, areas = _components(mask)
    boxes = np.array([_box(sl) for sl, a in zip(slices, areas) if a >= min_area], dtype=np.float32).reshape(-1, 4)
    boxes = _jitter_boxes(boxes, jitter, rng, mask.shape)
    return Prompts(boxes if len(boxes) else None, None, None, uses_ground_truth=True)


def box_around_mask(mask: np.ndarray, jitter: float = 0.0, rng: Optional[np.random.Generator] = None) -> Prompts:
    """One box around all foreground (oracle).

    Args:
        mask: (H, W) reference mask.
        jitter: see :func:`boxes_per_component`.
        rng: random generator for the jitter.

    Returns:
        One box, or no prompt for an empty mask.
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return empty_prompts(True)
    box = np.array([[cols.min(), rows.min(), cols.max(), rows.max()]], dtype=np.float32)
    return Prompts(_jitter_boxes(box, jitter, rng, mask.shape), None, None, uses_ground_truth=True)


def _centre_points(labels: np.ndarray, slices: Sequence[tuple[slice, slice]]) -> np.ndarray:
    """Per component, the pixel farthest from the component's border, as (x, y).

    The image edge counts as border. Among equally far pixels (a rectangle has a whole ridge
    of them) the one closest to the component's centroid wins, so the point is central.
    """
    out = np.zeros((len(slices), 2), dtype=np.float32)
    if not slices:
        return out
    # Zero padding makes the image edge a border for the distance transform.
    dist = ndimage.distance_transform_edt(np.pad(labels > 0, 1))[1:-1, 1:-1]
    for i, sl in enumerate(slices):
        comp = labels[sl] == i + 1
        d = np.where(comp, dist[sl], -1.0)
        rows, cols = np.nonzero(d == d.max())
        cy, cx = ndimage.center_of_mass(comp)
        j = int(np.argmin((rows - cy) ** 2 + (cols - cx) ** 2))
        out[i] = (cols[j] + sl[1].start, rows[j] + sl[0].start)
    return out


def farthest_interior_points(mask: np.ndarray, min_area: int = 1) -> Prompts:
    """One foreground point per component, at the pixel farthest from its border (oracle).

    Each point is its own object (one click per lesion), the point-prompt analogue of
    :func:`boxes_per_component`.

    Args:
        mask: (H, W) reference mask.
        min_area: components smaller than this get no point.

    Returns:
        K objects with one point each, largest component first.
    """
    labels, slices, areas = _components(mask)
    keep = [i for i, a in enumerate(areas) if a >= min_area]
    points = _centre_points(labels, slices)[keep]
    if len(points) == 0:
        return empty_prompts(True)
    return Prompts(None, points[:, None, :], np.ones((len(points), 1), dtype=np.int64), uses_ground_truth=True)


def mean_mask_region(train_masks: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Where the training masks overlap most: the mean mask at or above half its peak (or 0.5).

    Small scattered targets (CT lesions) never reach a mean of 0.5 anywhere, hence the
    relative threshold.

    Args:
        train_masks: (M, H, W) masks of one shape, or a sequence of them.

    Returns:
        (H, W) bool region.
    """
    stack = np.asarray(train_masks, dtype=np.float32)
    if stack.ndim != 3 or len(stack) == 0:
        raise ValueError(f"expected (M, H, W) training masks, got shape {stack.shape}")
    return region_of_mean_mask(stack.mean(axis=0))


def region_of_mean_mask(mean: np.ndarray) -> np.ndarray:
    """:func:`mean_mask_region` of an already averaged (H, W) mask (0..1 per pixel).

    Raises:
        ValueError: the mean is zero everywhere (every training mask is empty).
    """
    if mean.max() <= 0:
        raise ValueError("every training mask is empty: no mean-mask prompt can be derived")
    return mean >= min(0.5, 0.5 * float(mean.max()))


def fixed_points_from_mean_mask(train_masks: np.ndarray | Sequence[np.ndarray], n_points: int) -> Prompts:
    """Fixed points from the mean training mask, one set for a whole data set (no test GT).

    The first points are the centres (see :func:`farthest_interior_points`) of the region's
    components, largest first, so two lungs get one point each with ``n_points=2``; further
    points are placed by farthest-point sampling: each maximises the smaller of its distance
    to the region's border and to the points already placed.

    Args:
        train_masks: (M, H, W) training masks of one shape (resize them first).
        n_points: number of points; each point is its own object.

    Returns:
        Up to ``n_points`` objects of one foreground point each (fewer only when the region
        has fewer pixels), in the training masks' frame (use :meth:`Prompts.rescaled` for test
        images of another size).
    """
    return fixed_points_in_region(mean_mask_region(train_masks), n_points)


def fixed_points_in_region(region: np.ndarray, n_points: int) -> Prompts:
    """The points of :func:`fixed_points_from_mean_mask` for a region already derived (e.g.
    :func:`region_of_mean_mask` of a mean accumulated slice by slice over a large training set).

    Args:
        region: (H, W) bool region.
        n_points: number of points; each point is its own object.

    Returns:
        See :func:`fixed_points_from_mean_mask`.
    """
    if n_points < 1:
        raise ValueError(f"n_points must be >= 1, got {n_points}")
    labels, slices, _ = _components(region)
    points = [tuple(p) for p in _centre_points(labels, slices)[:n_points]]
    if len(points) < n_points:
        to_border = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        chosen = np.zeros_like(region)
        for x, y in points:
            chosen[int(y), int(x)] = True
        while len(points) < n_points:
            score = np.minimum(to_border, ndimage.distance_transform_edt(~chosen))
            y, x = np.unravel_index(int(np.argmax(score)), score.shape)
            if score[y, x] <= 0:
                break  # every pixel of the region holds a point already
            chosen[y, x] = True
            points.append((x, y))
    pts = np.array(points, dtype=np.float32).reshape(-1, 1, 2)
    return Prompts(None, pts, np.ones((len(pts), 1), dtype=np.int64), uses_ground_truth=False)


def prompts_from_draft(draft_mask: np.ndarray, min_area: int = 4) -> Prompts:
    """Boxes and centre points from another model's draft mask (no ground truth involved).

    Args:
        draft_mask: (H, W) binary prediction of a model.
        min_area: draft components smaller than this (speckle) get no prompt.

    Returns:
        K objects, each with its component's box and its farthest-from-border point; use
        :meth:`Prompts.without_points` for boxes only.
    """
    labels, slices, areas = _components(draft_mask)
    keep = [i for i, a in enumerate(areas) if a >= min_area]
    if not keep:
        return empty_prompts(False)
    boxes = np.array([_box(slices[i]) for i in keep], dtype=np.float32)
    points = _centre_points(labels, slices)[keep][:, None, :]
    return Prompts(boxes, points, np.ones((len(keep), 1), dtype=np.int64), uses_ground_truth=False)


@dataclass(frozen=True)
class Click:
    """One corrective click: where, and whether it adds (1) or removes (0) foreground."""

    x: float
    y: float
    label: int
    uses_ground_truth: bool = True


def next_correction_click(pred: np.ndarray, gt: np.ndarray) -> Optional[Click]:
    """The click a simulated user makes next: the centre of the largest error region.

    Args:
        pred: (H, W) current binary prediction.
        gt: (H, W) reference mask.

    Returns:
        A positive click in the middle (farthest from the region's border) of the largest
        false-negative region, or a negative one in the largest false-positive region,
        whichever region is larger (false negatives win ties); None when there is no error.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    best: Optional[tuple[int, np.ndarray, list[tuple[slice, slice]], int]] = None
    for error, label in ((gt & ~pred, 1), (pred & ~gt, 0)):
        labels, slices, areas = _components(error)
        if len(areas) and (best is None or areas[0] > best[0]):
            best = (int(areas[0]), labels, slices, label)
    if best is None:
        return None
    _, labels, slices, label = best
    x, y = _centre_points(np.where(labels == 1, 1, 0), slices[:1])[0]
    return Click(float(x), float(y), label)
