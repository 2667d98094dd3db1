"""PNG overlays: prediction outlines (and ground-truth outlines) drawn over the image.

Display orientation. A 2D image is shown as read (row 0 at the top). A volume slice ``k``
along ``axis`` is ``np.take(volume, k, axis)`` with the two remaining axes (a, b) in order, and
is shown transposed with the origin at the top (``imshow(slice.T, origin="upper")``): axis a
runs left to right, axis b top to bottom. A volume served in the orientation convention
(:data:`~s2unet.io.case.ORIENTATION`) is thereby shown as 3D Slicer shows it (axial: anterior at
the top, the patient's right on the left), whatever orientation its file is stored in.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..io.case import CaseImage
from .outputs import atomic_path

PRED_COLORS = ("red", "orange", "magenta", "cyan", "yellow", "deepskyblue")
GT_COLOR = "lime"
GRID_COLUMNS = 4


def pick_slices(pred: np.ndarray, gt: Optional[np.ndarray] = None, axis: int = 2, n: int = 12) -> list[int]:
    """Slices worth showing: where the prediction/GT is largest, spread over the volume.

    The slices holding any foreground (prediction or GT) are split, in order, into ``n``
    consecutive groups and the slice with the largest foreground area of each group is taken,
    so a big lesion cannot claim every panel. When fewer than ``n`` slices hold foreground,
    evenly spaced other slices fill the grid.

    Args:
        pred: (C, *spatial) binary prediction of a volume.
        gt: optional (C, *spatial) reference.
        axis: spatial slice axis.
        n: number of slices wanted.

    Returns:
        Sorted slice indices (at most ``n``, fewer only for short volumes).
    """
    fg = np.any(pred, axis=0) if gt is None else np.any(pred, axis=0) | np.any(gt, axis=0)
    area = np.count_nonzero(fg, axis=tuple(a for a in range(fg.ndim) if a != axis))
    n_slices = area.size
    nonempty = np.flatnonzero(area)
    groups = np.array_split(nonempty, min(n, nonempty.size)) if nonempty.size else []
    chosen = {int(g[np.argmax(area[g])]) for g in groups}
    rest = np.setdiff1d(np.arange(n_slices), list(chosen))
    missing = min(n - len(chosen), rest.size)
    if missing > 0:
        chosen.update(int(rest[i]) for i in np.linspace(0, rest.size - 1, missing).round().astype(int))
    return sorted(chosen)


def _display_range(images: Sequence[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate([np.asarray(im, dtype=np.float32).ravel() for im in images])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, (0.5, 99.5))
    return float(lo), float(hi if hi > lo else lo + 1.0)


def save_overlay(
    path: Path,
    images: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    gts: Optional[Sequence[np.ndarray]] = None,
    titles: Optional[Sequence[str]] = None,
    labels: Sequence[str] = ("prediction",),
    title: str = "",
) -> None:
    """Draw panels already in display orientation into one PNG grid (atomic write).

    Args:
        path: output ``.png``.
        images: 2D gray images, one per panel (any intensity scale; shown between the 0.5th and
            99.5th percentiles of all panels).
        preds: (C, H, W) binary predictions, one per panel; outlines in one colour per label.
        gts: optional (C, H, W) references; outlines in green, dashed.
        titles: one caption per panel.
        labels: label names for the legend.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    n = len(images)
    cols = min(GRID_COLUMNS, n)
    rows = math.ceil(n / cols)
    vmin, vmax = _display_range(images)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.3 * rows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(images[i], cmap="gray", vmin=vmin, vmax=vmax, origin="upper", interpolation="nearest")
        outlines = [(p, PRED_COLORS[c % len(PRED_COLORS)], "solid") for c, p in enumerate(preds[i])]
        if gts is not None:
            outlines += [(g, GT_COLOR, "dashed") for g in gts[i]]
        for mask, color, style in outlines:
            if mask.any():  # contour of an empty mask only warns
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=0.9, linestyles=style)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    handles = [Line2D([], [], color=PRED_COLORS[c % len(PRED_COLORS)], label=f"pred {name}") for c, name in enumerate(labels)]
    if gts is not None:
        handles.append(Line2D([], [], color=GT_COLOR, linestyle="dashed", label="ground truth"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def volume_overlay(
    path: Path,
    volume: Union[CaseImage, np.ndarray],
    pred: np.ndarray,
    gt: Optional[np.ndarray] = None,
    axis: int = 2,
    n_slices: int = 12,
    labels: Sequence[str] = ("prediction",),
    title: str = "",
) -> list[int]:
    """Overlay grid of a volume's most telling slices (see :func:`pick_slices`).

    Args:
        path: output ``.png``.
        volume: the image volume (served orientation); a CaseImage is read slice by slice.
        pred: (C, *spatial) binary prediction in the same orientation.
        gt: optional (C, *spatial) reference.
        axis: spatial slice axis.
        n_slices: panels (a grid of up to four columns).
        labels: label names for the legend.
        title: figure title.

    Returns:
        The slice indices shown.
    """
    ks = pick_slices(pred, gt, axis, n_slices)

    def panel(array: np.ndarray, k: int) -> np.ndarray:
        return np.take(array, k, axis=axis).T

    images = [
        volume.get_slice(k, axis).T if isinstance(volume, CaseImage) else panel(volume, k) for k in ks
    ]
    preds = [np.stack([panel(p, k) for p in pred]) for k in ks]
    gts = [np.stack([panel(g, k) for g in gt]) for k in ks] if gt is not None else None
    save_overlay(path, images, preds, gts, [f"slice {k}" for k in ks], labels, title)
    return ks


def image_overlay(
    path: Path,
    image: np.ndarray,
    pred: np.ndarray,
    gt: Optional[np.ndarray] = None,
    labels: Sequence[str] = ("prediction",),
    title: str = "",
) -> None:
    """Overlay of one 2D image (shown as read).

    Args:
        path: output ``.png``.
        image: (H, W) image.
        pred: (C, H, W) binary prediction.
        gt: optional (C, H, W) reference.
        labels: label names for the legend.
        title: figure title.
    """
    save_overlay(path, [image], [pred], [gt] if gt is not None else None, None, labels, title)
