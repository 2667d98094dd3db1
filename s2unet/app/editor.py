"""Editing one case: correction clicks, boxes, brush and eraser, drafts, undo and redo.

Every edit changes planes of the (C, S, H, W) mask stack in the display frame and is recorded
as the planes it changed (before and after), so undo and redo are exact and cheap.

Clicks and boxes go through a :class:`~s2unet.baselines.session.ClickSession`, the loop that
``compare``'s ``iterative`` method runs. A click refines the object it lands on; a click outside
any object starts a new one and never merges with another, so the other lung stays as it is:

* a box starts a new object: the model's answer to the box replaces the mask components the
  box touches;
* a click on the current object adds a point to its prompts, the model's last logits being the
  mask prompt;
* a click on another part of the mask starts an object from the component under it: that
  component's box, the click and the component itself (as mask prompt) are the prompts, and the
  answer replaces the component;
* an add click off the mask starts a new object from the click alone, whose answer is added to
  the mask: the pixels of the other objects stay as they are (prompting it together with another
  object's points made SAM flood the chest between two lungs). A remove click off the mask
  changes nothing.

A stroke, a draft, undo and redo end the current object: the next click starts again from the
mask as it is.

Which slices of a volume are *labelled* (saved as ground truth that trains, see
:mod:`s2unet.data.labelled`) is kept per slice: a click, box or stroke marks its slice, the
user marks the others (a slice reviewed and left empty, a draft accepted as it is). A draft
alone marks nothing: unreviewed model output is not ground truth. Marks are not undone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ..prompts import Click, Prompts
from ..baselines.session import ClickSession
from ..baselines.sam_predictors import PromptedPredictor
from .workspace import AppError, CaseStats, Layer, OpenCase

HISTORY_LIMIT = 200  # edits kept for undo (each holds only the planes it changed)
_FULL_2D = ndimage.generate_binary_structure(2, 2)  # 8-connectivity, as the prompt generators


@dataclass
class PlaneChange:
    """One plane an edit changed."""

    layer: int
    plane: int
    before: np.ndarray
    after: np.ndarray


@dataclass
class _Object:
    """The object clicks currently refine: its session, plane and the mask outside it."""

    layer: int
    plane: int
    window: str
    session: ClickSession
    base: np.ndarray  # the plane's mask minus this object
    current: np.ndarray  # the object's last answer


def stroke_mask(shape: tuple[int, int], points: Sequence[tuple[float, float]], radius: float) -> np.ndarray:
    """The pixels a round brush of ``radius`` covers along a polyline.

    Args:
        shape: (H, W) of the plane.
        points: (x, y) pixel positions of the stroke, in order (one point = a dab).
        radius: brush radius in pixels (>= 0.5).

    Returns:
        (H, W) bool.
    """
    canvas = Image.new("1", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    r = max(0.5, float(radius))
    xy = [(float(x), float(y)) for x, y in points]
    if len(xy) > 1:
        # 2r + 1 pixels wide, as wide as the round dab at each point (centre pixel plus r per side).
        draw.line(xy, fill=1, width=int(round(2 * r)) + 1, joint="curve")
    for x, y in xy:  # round caps, and the dab of a single point
        draw.ellipse([x - r, y - r, x + r, y + r], fill=1)
    return np.asarray(canvas, dtype=bool)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask, structure=_FULL_2D)


def _box_of(region: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(region)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float32)


class CaseEditor:
    """The editing state of one open case.

    Args:
        opened: the case's pixels.
        layers: the layers (mask channels).
        masks: (C, S, H, W) bool starting masks (saved or autosaved work), or None for empty.
        stats: the bookkeeping so far (autosaved), or None for new.
        labelled: (S,) bool slices labelled so far, or None for none.

    Attributes:
        masks: (C, S, H, W) bool current masks.
        labelled: (S,) bool slices labelled (edited or marked).
        draft: (C, S, H, W) bool draft masks for the log's Dice, None before any draft.
        drafted: (C, S) planes that received a draft.
        draft_source: what made the draft (checkpoint path, a text phrase).
        restored_from: where the starting masks came from (``autosave``, ``saved masks``, "").
    """

    def __init__(self, opened: OpenCase, layers: Sequence[Layer], masks: Optional[np.ndarray] = None,
                 stats: Optional[CaseStats] = None, labelled: Optional[np.ndarray] = None) -> None:
        self.opened = opened
        self.layers = list(layers)
        shape = (len(self.layers), opened.n_slices, *opened.plane_shape)
        self.masks = np.zeros(shape, dtype=bool) if masks is None else masks.astype(bool, copy=True)
        if self.masks.shape != shape:
            raise AppError(f"{opened.case.case_id}: masks of shape {self.masks.shape}, expected {shape}")
        self.labelled = np.zeros(shape[1], dtype=bool) if labelled is None else labelled.astype(bool, copy=True)
        if self.labelled.shape != shape[1:2]:
            raise AppError(f"{opened.case.case_id}: {self.labelled.shape[0]} labelled flags for {shape[1]} slices")
        self.stats = stats or CaseStats()
        self.draft: Optional[np.ndarray] = None
        self.drafted: Optional[np.ndarray] = None
        self.draft_source = ""
        self.restored_from = ""
        self._undo: list[list[PlaneChange]] = []
        self._redo: list[list[PlaneChange]] = []
        self._object: Optional[_Object] = None

    # ------------------------------------------------------------------------------ history
    def _check(self, layer: int, plane: int) -> None:
        if not 0 <= layer < self.masks.shape[0]:
            raise AppError(f"layer {layer} outside 0..{self.masks.shape[0] - 1}")
        if not 0 <= plane < self.masks.shape[1]:
            raise AppError(f"slice {plane} outside 0..{self.masks.shape[1] - 1}")

    def _apply(self, changes: list[PlaneChange]) -> None:
        """Make the changes that alter something, and record them as one edit."""
        changes = [ch for ch in changes if not np.array_equal(ch.before, ch.after)]
        if not changes:
            return
        for ch in changes:
            self.masks[ch.layer, ch.plane] = ch.after
        self._undo.append(changes)
        del self._undo[:-HISTORY_LIMIT]
        self._redo.clear()
        self.stats.tick()

    def _set_plane(self, layer: int, plane: int, new: np.ndarray) -> None:
        self._apply([PlaneChange(layer, plane, self.masks[layer, plane].copy(), new)])

    def _move(self, source: list[list[PlaneChange]], target: list[list[PlaneChange]], redo: bool) -> bool:
        """Undo (or redo) the last edit of ``source`` and push it onto ``target``."""
        self._object = None
        if not source:
            return False
        changes = source.pop()
        for ch in changes:
            self.masks[ch.layer, ch.plane] = ch.after if redo else ch.before
        target.append(changes)
        self.stats.tick()
        return True

    def undo(self) -> bool:
        """Revert the last edit; False when there is none."""
        return self._move(self._undo, self._redo, redo=False)

    def redo(self) -> bool:
        """Make the last undone edit again; False when there is none."""
        return self._move(self._redo, self._undo, redo=True)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def mark(self, plane: Optional[int], labelled: bool) -> None:
        """Mark one slice (or, with ``plane`` None, every slice) as labelled or not."""
        if plane is None:
            self.labelled[:] = labelled
        else:
            self._check(0, plane)
            self.labelled[plane] = labelled

    # ------------------------------------------------------------------------------ strokes
    def stroke(self, layer: int, plane: int, points: Sequence[tuple[float, float]], radius: float,
               erase: bool) -> None:
        """Paint (or erase) along a polyline with a round brush.

        Args:
            layer: the layer.
            plane: the slice (0 for images).
            points: (x, y) pixel positions.
            radius: brush radius in pixels.
            erase: clear instead of set.
        """
        self._check(layer, plane)
        if not points:
            raise AppError("a stroke needs at least one point")
        if not 0.5 <= radius <= 500:
            raise AppError(f"brush radius {radius} outside 0.5..500 pixels")
        self._object = None
        covered = stroke_mask(self.masks.shape[2:], points, radius)
        current = self.masks[layer, plane]
        self._set_plane(layer, plane, current & ~covered if erase else current | covered)
        self.labelled[plane] = True
        self.stats.strokes += 1

    # ------------------------------------------------------------------------------- drafts
    def set_draft(self, draft: np.ndarray, planes: Sequence[int], source: str,
                  layers: Optional[Sequence[int]] = None) -> None:
        """Replace planes of every layer (or of ``layers``) by a draft, and keep it for the log's Dice.

        Args:
            draft: (len(layers) or C, len(planes), H, W) bool.
            planes: the slices the draft covers.
            source: what made the draft.
            layers: the layers the draft's channels go to (default: all, in order).
        """
        self._object = None
        store, drafted = self._new_draft_store()
        changes = []
        targets = range(self.masks.shape[0]) if layers is None else layers
        for i, k in enumerate(planes):
            for j, c in enumerate(targets):
                store[c, k] = draft[j, i]
                drafted[c, k] = True
                changes.append(PlaneChange(c, k, self.masks[c, k].copy(), draft[j, i].astype(bool)))
        self.draft_source = source
        self._apply(changes)

    # ------------------------------------------------------------------------ boxes, clicks
    def _session(self, predictor: PromptedPredictor, plane: int, window: str) -> ClickSession:
        image = self.opened.plane(plane, window)
        return ClickSession(predictor, image, key=(self.opened.case.case_id, plane, window))

    def box(self, predictor: PromptedPredictor, layer: int, plane: int, window: str,
            box: tuple[float, float, float, float]) -> None:
        """Segment a new object from a box.

        The answer is an edit, not a draft: the log's Dice compares model drafts with what the user
        saved, and a box's answer is the user's own work (comparing it would report 1.0 for itself).

        Args:
            predictor: the prompted model.
            layer: the layer.
            plane: the slice.
            window: the window the slice is shown (and segmented) in.
            box: ``(x0, y0, x1, y1)`` in pixels, any corner order.
        """
        self._check(layer, plane)
        x0, x1 = sorted((box[0], box[2]))
        y0, y1 = sorted((box[1], box[3]))
        h, w = self.masks.shape[2:]
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise AppError("draw a box at least 2 pixels wide and high")
        rect = np.array([[max(0.0, x0), max(0.0, y0), min(w - 1.0, x1), min(h - 1.0, y1)]], dtype=np.float32)
        current = self.masks[layer, plane]
        labels, _ = _components(current)
        touched = np.unique(labels[int(rect[0, 1]) : int(rect[0, 3]) + 1, int(rect[0, 0]) : int(rect[0, 2]) + 1])
        base = current & ~np.isin(labels, touched[touched > 0])
        session = self._session(predictor, plane, window)
        answer = session.start(Prompts(rect, None, None, uses_ground_truth=False)) >= 0.5
        self._set_plane(layer, plane, base | answer)
        self._object = _Object(layer, plane, window, session, base, answer)
        self.labelled[plane] = True
        self.stats.boxes += 1

    def click(self, predictor: PromptedPredictor, layer: int, plane: int, window: str, x: float, y: float,
              add: bool) -> str:
        """One correction click (see the module docstring for what it refines).

        Args:
            predictor: the prompted model.
            layer: the layer.
            plane: the slice.
            window: the window the slice is shown in.
            x: column in pixels.
            y: row in pixels.
            add: an add (foreground) click, else a remove click.

        Returns:
            A short note for the page ("" when the click was used as asked).
        """
        self._check(layer, plane)
        h, w = self.masks.shape[2:]
        if not (0 <= x < w and 0 <= y < h):
            raise AppError(f"click at ({x:.0f}, {y:.0f}) is outside the {w} x {h} image")
        click = Click(float(x), float(y), 1 if add else 0, uses_ground_truth=False)
        current = self.masks[layer, plane]
        row, col = int(y), int(x)
        obj = self._object
        if obj is not None and (obj.layer, obj.plane, obj.window) == (layer, plane, window) and obj.current[row, col]:
            answer = obj.session.click(click) >= 0.5
            base = obj.base
        else:
            labels, _ = _components(current)
            target = int(labels[row, col])
            if target == 0 and not add:
                self.stats.clicks += 1
                self.stats.tick()
                return "nothing to remove here: a remove click acts on the mask it lands on"
            session = self._session(predictor, plane, window)
            if target:
                region = labels == target
                base = current & ~region
                prompts = Prompts(_box_of(region)[None], None, None, uses_ground_truth=False)
                prompts = prompts.with_point(click.x, click.y, click.label, uses_ground_truth=False)
                answer = session.start(prompts, mask=region) >= 0.5
            else:
                base = current
                answer = session.click(click) >= 0.5
            obj = _Object(layer, plane, window, session, base, answer)
        obj.current = answer
        self._object = obj
        self._set_plane(layer, plane, base | answer)
        self.labelled[plane] = True
        self.stats.clicks += 1
        self.stats.tick()
        return ""

    def _new_draft_store(self) -> tuple[np.ndarray, np.ndarray]:
        if self.draft is None or self.drafted is None:
            self.draft = np.zeros_like(self.masks)
            self.drafted = np.zeros(self.masks.shape[:2], dtype=bool)
        return self.draft, self.drafted

    def clear_object(self) -> None:
        """End the current object (moving to another slice or case)."""
        self._object = None

