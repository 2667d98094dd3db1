"""The torch dataset of 2D images and volume slices, plus the shared slice preparation.

Every sample is a dict::

    {"image": float32 (3, S, S) in 0..1,
     "mask":  float32 (C, S, S) for binary / multilabel, int64 (S, S) for multiclass,
     "case":  str case id,
     "slice": int slice index (0 for 2D images)}

with S = ``cfg.image_size``. Images are resized bilinearly (antialiased when shrinking),
masks with nearest-neighbour; the aspect ratio is not kept (every input becomes S x S).

Slice layout. A slice ``k`` along ``cfg.axis`` is ``np.take(volume, k, axis)`` of the served
array (in the orientation convention :data:`~s2unet.io.case.ORIENTATION` when ``cfg.reorient``):
its rows are the lower remaining volume axis and its columns the higher one, with no transpose,
so it is the transpose of the displayed picture ``np.take(volume, k, axis).T``. Inference writes a
predicted slice back with ``volume[(slice(None),) * axis + (k,)] = prediction`` after resizing
it to the slice's own shape — no orientation bookkeeping is needed beyond that.
"""
from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from .cases import Case
from .errors import DataError
from .labelled import LabelledSlices
from .intensity import hu_bounds, jitter_window, normalize_unit, volume_value_range, window_bounds, window_to_unit
from ..io.case import CaseImage, check_same_geometry
from ..io.formats import is_slice_stack, read_case, read_labels
from .transforms import build_augment, item_seed, seed_augment

ArrayLike = Union[np.ndarray, torch.Tensor]


# ------------------------------------------------------------------------------------- resizing
def resize_to(x: ArrayLike, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize a (C, H, W) or (H, W) array to (C, size, size) / (size, size).

    Args:
        x: image (float) or mask (any dtype) as numpy or torch.
        size: output side.
        mode: ``"bilinear"`` for images (antialiased when shrinking, so 512 -> 352 does not
            alias fine rib edges) or ``"nearest"`` for masks and label maps (``nearest-exact``
            pixel centres, matching PIL/scipy, so a mask and its image stay aligned).

    Returns:
        torch tensor with the input's dtype (float32 for bilinear).
    """
    t = torch.as_tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    squeeze = t.ndim == 2
    if squeeze:
        t = t[None]
    if tuple(t.shape[-2:]) == (size, size):
        out = t if mode != "bilinear" else t.float()
    elif mode == "bilinear":
        shrink = t.shape[-1] > size or t.shape[-2] > size
        out = F.interpolate(t[None].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)[0]
    elif mode == "nearest":
        out = F.interpolate(t[None].float(), size=(size, size), mode="nearest-exact")[0].to(t.dtype)
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    return out[0] if squeeze else out


# ---------------------------------------------------------------------------------- volume slices
def _needs_value_range(dtype: np.dtype, cfg: DataConfig) -> bool:
    """Whether windowing needs the volume's min/max (preset none on non-8/16-bit data)."""
    return window_bounds(cfg.window) is None and np.dtype(dtype) not in (np.uint8, np.uint16, np.bool_)


def context_indices(k: int, n: int, context: bool) -> list[int]:
    """The three slice indices forming the channels of slice ``k`` of ``n``.

    Args:
        k: centre slice.
        n: slices along the axis.
        context: 2.5D (neighbours k-1, k, k+1, clamped at the ends) or the slice three times.

    Returns:
        Three indices.
    """
    if not 0 <= k < n:
        raise IndexError(f"slice {k} outside 0..{n - 1}")
    return [max(k - 1, 0), k, min(k + 1, n - 1)] if context else [k, k, k]


def prepare_slice(
    volume: Union[np.ndarray, CaseImage],
    k: int,
    cfg: DataConfig,
    value_range: Optional[tuple[float, float]] = None,
) -> np.ndarray:
    """The model input channels for slice ``k``: windowed to 0..1, at the slice's own size.

    Used by :class:`SliceDataset` and by inference, so both see identical inputs.

    Args:
        volume: the decoded served array (fast; what inference should pass, decoding once with
            ``CaseImage.get_array()``) or a CaseImage (each call reads 1-3 slices through
            the lazy proxy, which for .nii.gz decompresses the file up to that slice).
        k: slice index along ``cfg.axis``.
        cfg: uses ``axis``, ``window``, ``context_slices`` and ``normalize``.
        value_range: the volume's (min, max), needed only for ``window.preset: none`` on data
            that is not uint8/uint16; computed from ``volume`` when omitted (pass it when
            calling per slice to avoid recomputing).

    Returns:
        float32 (3, H, W) in 0..1 where (H, W) are the slice's dimensions.
    """
    axis = cfg.axis
    n = volume.shape[axis]
    idx = context_indices(k, n, cfg.context_slices)
    if isinstance(volume, CaseImage):
        if value_range is None and _needs_value_range(volume.dtype, cfg):
            volume = volume.get_array()  # min/max needs every voxel anyway
    if isinstance(volume, CaseImage):
        planes = {i: volume.get_slice(i, axis) for i in set(idx)}
        stack = np.stack([planes[i] for i in idx])
    else:
        stack = np.stack([np.take(volume, i, axis=axis) for i in idx])
        if value_range is None and _needs_value_range(volume.dtype, cfg):
            value_range = volume_value_range(volume)
    return normalize_unit(window_to_unit(stack, cfg.window, value_range), cfg.normalize)


def slice_as_volume(picture: np.ndarray, axis: int) -> np.ndarray:
    """A 2D slice (as displayed: rows top to bottom) as a one-slice volume along ``axis``.

    The slice is stored transposed, ``np.take(volume, 0, axis) == picture.T``: the layout of
    served volumes, whose slice ``k`` displays as ``np.take(volume, k, axis).T``. A model
    trained on such volumes therefore sees a PNG/DICOM slice the way it saw its training
    slices, with its own windowing and normalisation applied by :func:`prepare_slice`.

    Args:
        picture: (H, W) intensities (any dtype; not rescaled).
        axis: the model's slice axis (``DataConfig.axis``).

    Returns:
        The volume, shape (W, H) with a length-1 axis inserted at ``axis``.
    """
    if picture.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {picture.shape}")
    return np.expand_dims(np.ascontiguousarray(picture.T), axis)


def prepare_image(gray: np.ndarray, normalize: str = "none") -> np.ndarray:
    """The model input channels of a 2D image: gray (NaN as 0) repeated to three channels.

    Used by :class:`SliceDataset` and by inference, so both see identical inputs.

    Args:
        gray: (H, W) values in 0..1, as :func:`~s2unet.io.pictures.read_image` returns.
        normalize: ``DataConfig.normalize`` (see :func:`~s2unet.data.intensity.normalize_unit`).

    Returns:
        float32 (3, H, W).
    """
    gray = np.nan_to_num(np.asarray(gray, dtype=np.float32), nan=0.0)
    if gray.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {gray.shape}")
    return np.repeat(normalize_unit(gray[None], normalize), 3, axis=0)


def label_slice(labels: Sequence[np.ndarray], k: int, cfg: DataConfig) -> np.ndarray:
    """The target of slice ``k`` from the case's label volumes.

    Args:
        labels: one served label volume per label folder (binary / multilabel: foreground is
            value > 0), or a single label map for multiclass.
        k: slice index along ``cfg.axis``.
        cfg: uses ``axis`` and ``task``.

    Returns:
        float32 (C, H, W) of 0/1 for binary / multilabel; int64 (H, W) for multiclass.
    """
    if cfg.task == "multiclass":
        return np.take(labels[0], k, axis=cfg.axis).astype(np.int64)
    return np.stack([np.take(lab, k, axis=cfg.axis) > 0 for lab in labels]).astype(np.float32)


# ------------------------------------------------------------------------------------------ cache
@dataclass
class _Decoded:
    array: np.ndarray
    value_range: Optional[tuple[float, float]]


class VolumeCache:
    """LRU cache of decoded volumes bounded in bytes.

    Each dataset owns one (or is given one to share): DataLoader workers each hold their own
    copy (forked at start), so the worst-case memory is ``(num_workers + 1) * max_bytes`` per
    cache. A volume larger than the whole budget is decoded, used and not kept.

    Args:
        max_bytes: budget.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: "OrderedDict[tuple, _Decoded]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # pin_memory / prefetch threads may share a dataset
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self) -> dict:
        # Pickled copies (spawned workers) start empty: arrays are cheaper to re-decode than to
        # ship through a pipe, and a lock cannot be pickled.
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"])

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def get(self, key: tuple, load: Callable[[], _Decoded]) -> _Decoded:
        """The cached entry for ``key``, decoding it with ``load`` on a miss.

        Args:
            key: hashable key (path plus how it was decoded).
            load: zero-argument decoder.

        Returns:
            The decoded entry.
        """
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return entry
        entry = load()
        size = entry.array.nbytes
        with self._lock:
            self.misses += 1
            if size > self.max_bytes or key in self._items:
                return entry
            while self._items and self._bytes + size > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.array.nbytes
            self._items[key] = entry
            self._bytes += size
        return entry


def _decode_image(path: Path, reorient: bool, cfg: DataConfig) -> _Decoded:
    arr = read_case(path, "volume", reorient).get_array()
    value_range = volume_value_range(arr) if _needs_value_range(arr.dtype, cfg) else None
    return _Decoded(arr, value_range)


def _decode_label(path: Path, reorient: bool, task: str) -> _Decoded:
    arr = read_case(path, "volume", reorient).get_array()
    if task == "multiclass":
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
                raise DataError(f"{path}: a multiclass label volume must hold integers")
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        # The smallest integer type keeps many label volumes in the cache.
        small = np.uint8 if lo >= 0 and hi < 256 else np.int32
        return _Decoded(arr.astype(small), None)
    return _Decoded((arr > 0).astype(np.uint8), None)


# ---------------------------------------------------------------------------------------- dataset
class SliceDataset(torch.utils.data.Dataset):
    """The 2D training and evaluation items of some cases: every slice of a volume along
    ``cfg.axis``, the one plane of a 2D picture.

    Each case's file format decides which (:func:`~s2unet.io.formats.is_slice_stack`), not
    ``data.kind``: a format added to the registry is sliced or read whole by what it declares.

    Volumes: construction reads headers, checks every label volume's geometry against its image
    and decodes the label volumes once (uint8) to find the lesion slices; image volumes are
    decoded on first use. Decoded volumes live in the dataset's :class:`VolumeCache`, limited to
    ``cfg.cache_mb`` megabytes (no other dataset changes that budget) — per process: each
    DataLoader worker has its own copy, so a dataset larger than RAM works, at the price of
    re-decoding evicted volumes (about 0.1 s for a 256 x 256 x 160 uint8 .nii.gz on one core).
    Slices are windowed by ``cfg.window`` (:func:`prepare_slice`).

    2D pictures (X-rays): read whole, with their masks, each time they are served (nothing at
    construction), in 0..1 as :func:`~s2unet.io.formats.read_case` reads them for ``kind:
    image`` (:func:`prepare_image`).

    Args:
        cases: from :func:`~s2unet.data.cases.find_cases`.
        cfg: the data config.
        train: apply augmentation.
        seed: per-item augmentation seeding (see :mod:`.transforms`); None leaves the
            transform's own random state running.
        cache: a cache to share with other datasets; by default a new one of ``cfg.cache_mb``.
        labelled: the labelled slices of partially labelled volumes; only those are served.

    Raises:
        DataError: a bad ``cfg.axis``, an unreadable volume header, a label volume whose
            geometry differs from its image's, or a labelled slice outside its volume.
    """

    def __init__(self, cases: Sequence[Case], cfg: DataConfig, train: bool, seed: Optional[int] = None,
                 cache: Optional[VolumeCache] = None, labelled: Optional[LabelledSlices] = None) -> None:
        self.cases = list(cases)
        self.cfg = cfg
        self.train = bool(train)
        self.augment = build_augment(cfg.augment, cfg.task, cfg.image_size) if train else None
        self.seed = seed
        self.epoch = 0
        self.cache = cache if cache is not None else VolumeCache(cfg.cache_mb * 2**20)
        if cfg.axis not in (0, 1, 2):
            raise DataError(f"data.axis must be 0, 1 or 2, got {cfg.axis}")
        self.items: list[tuple[str, int]] = []
        # Volumes labelled on some slices only: case id -> those slices (validation scores only them).
        self.partial: dict[str, list[int]] = {}
        self._case_of_item: list[int] = []
        self._stacks = [is_slice_stack(case.image) for case in self.cases]
        flags: list[np.ndarray] = []
        other = tuple(a for a in range(3) if a != cfg.axis)
        for ci, case in enumerate(self.cases):
            slices: Sequence[int] = [0]
            if self._stacks[ci]:
                image = read_case(case.image, "volume", cfg.served)
                for path in case.labels:
                    check_same_geometry(image, read_case(path, "volume", cfg.served))
                n = image.shape[cfg.axis]
                listed = labelled.slices_of(case.case_id, n) if labelled is not None else None
                slices = range(n) if listed is None else listed
                if listed is not None:
                    self.partial[case.case_id] = listed
                fg = np.zeros(n, dtype=bool)
                for lab in self._labels(ci):
                    fg |= lab.any(axis=other) if cfg.task != "multiclass" else (lab > 0).any(axis=other)
                flags.append(fg if listed is None else fg[listed])
            elif labelled is not None and case.case_id in labelled.cases:
                raise DataError(f"{labelled.path} lists slices of {case.image}, a 2D image")
            self.items.extend((case.case_id, k) for k in slices)
            self._case_of_item.extend([ci] * len(slices))
        # Pictures' masks are read only when served, so their items have no flags.
        self._flags = np.concatenate(flags) if flags and all(self._stacks) else None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch used in per-item augmentation seeds (see :mod:`.transforms`).

        Args:
            epoch: epoch number; call in the main process before iterating the DataLoader.
        """
        self.epoch = int(epoch)

    def _item_rng(self, index: int) -> np.random.Generator:
        """A generator for the random choices of item ``index`` made outside the monai transform."""
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng(item_seed(self.seed + 1, self.epoch, index))

    def _image(self, ci: int) -> _Decoded:
        path = self.cases[ci].image
        return self.cache.get(("image", str(path), self.cfg.served, self.cfg.window.preset),
                              lambda: _decode_image(path, self.cfg.served, self.cfg))

    def _labels(self, ci: int) -> list[np.ndarray]:
        kind = "multiclass" if self.cfg.task == "multiclass" else "binary"
        return [
            self.cache.get(("label", str(p), self.cfg.served, kind),
                           lambda p=p: _decode_label(p, self.cfg.served, self.cfg.task)).array
            for p in self.cases[ci].labels
        ]

    def __len__(self) -> int:
        return len(self.items)

    def lesion_flags(self) -> Optional[np.ndarray]:
        """bool per item: the slice has any foreground in any label (computed at construction);
        None when the items are 2D pictures, whose masks are read only when served."""
        return None if self._flags is None else self._flags.copy()

    def restrict(self, indices: Sequence[int]) -> None:
        """Keep only the items ``indices`` (few-label training, ``data.max_train_slices``).

        Cases keep their place in ``cases`` (a case's other items are simply not served).

        Args:
            indices: item indices to keep, each once.
        """
        keep = np.asarray(indices, dtype=np.int64)
        self.items = [self.items[i] for i in keep]
        self._case_of_item = [self._case_of_item[i] for i in keep]
        if self._flags is not None:
            self._flags = self._flags[keep]

    def case_items(self, case_id: str) -> list[int]:
        """Dataset indices of one case's items, in slice order (for per-volume evaluation)."""
        return [i for i, (cid, _) in enumerate(self.items) if cid == case_id]

    def _picture(self, ci: int) -> tuple[np.ndarray, np.ndarray]:
        """The 2D picture case ``ci`` at its own resolution: input channels (3, H, W) and its
        target as :func:`label_slice` shapes it; DataError on unreadable files or a mask whose
        shape differs from the image's."""
        case = self.cases[ci]
        gray = read_case(case.image, self.cfg.kind, self.cfg.served).picture()
        if self.cfg.task == "multiclass":
            mask: np.ndarray = read_labels(case.labels[0], self.cfg.served, self.cfg.mask_threshold, label_map=True)
            shapes = [mask.shape]
        else:
            planes = [read_labels(p, self.cfg.served, self.cfg.mask_threshold, label_map=False) for p in case.labels]
            shapes = [p.shape for p in planes]
            mask = np.stack(planes).astype(np.float32) if planes else np.zeros((0, *gray.shape), np.float32)
        for path, shape in zip(case.labels, shapes):
            if shape != gray.shape:
                raise DataError(f"{path} has shape {shape} but its image {case.image} has shape {gray.shape}")
        return prepare_image(gray, self.cfg.normalize), mask

    def _slice(self, ci: int, k: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice ``k`` of the volume case ``ci``: windowed input channels and its target."""
        entry = self._image(ci)
        cfg = self.cfg
        jitter = cfg.augment.window_jitter if self.train and cfg.augment.enabled else 0.0
        bounds = hu_bounds(entry.array.dtype, cfg.window, entry.value_range) if jitter > 0 else None
        if bounds is not None:  # window jitter: only HU data has a window to move
            cfg = dataclasses.replace(cfg, window=jitter_window(bounds, jitter, self._item_rng(index)))
        return prepare_slice(entry.array, k, cfg, entry.value_range), label_slice(self._labels(ci), k, self.cfg)

    def native_item(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` as the model sees it before resizing, without augmentation: input channels
        (3, H, W) and target (what a dataset fingerprint measures)."""
        ci = self._case_of_item[i]
        if not self._stacks[ci]:
            return self._picture(ci)
        entry = self._image(ci)
        k = self.items[i][1]
        return prepare_slice(entry.array, k, self.cfg, entry.value_range), label_slice(self._labels(ci), k, self.cfg)

    def geometry(self, i: int) -> tuple[Optional[tuple[float, float]], Optional[str]]:
        """Item ``i``'s in-plane pixel size (mm; None for a picture) and the axcodes its volume is
        served in (None for a picture, which has no geometry)."""
        ci = self._case_of_item[i]
        if not self._stacks[ci]:
            return None, None
        image = read_case(self.cases[ci].image, "volume", self.cfg.reorient)
        zooms = [float(z) for a, z in enumerate(image.zooms) if a != self.cfg.axis]
        return (zooms[0], zooms[1]), "".join(image.axcodes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ci = self._case_of_item[i]
        case_id, k = self.items[i]
        image, mask = self._slice(ci, k, i) if self._stacks[ci] else self._picture(ci)
        size = self.cfg.image_size
        sample: dict[str, Any] = {
            "image": resize_to(image, size, "bilinear").clamp_(0.0, 1.0).contiguous(),
            "mask": resize_to(mask, size, "nearest").contiguous(),
            "case": case_id,
            "slice": int(k),
        }
        if self.augment is not None:
            if self.seed is not None:
                seed_augment(self.augment, item_seed(self.seed, self.epoch, i))
            sample = self.augment(sample)
        return sample
