"""Slice-wise prediction of volumes and images with exactly the training preprocessing.

A volume is decoded once in its stored dtype (uint8 stays uint8), then its slices are prepared
with :func:`s2unet.data.prepare_slice` (windowing, 2.5D context), resized to the model's square
input with :func:`s2unet.data.resize_to` and predicted in batches, so only one batch of float
inputs exists at a time (on the device). The logits are resized back to each slice's own size
(bilinear) and calibrated (the checkpoint's temperature, :class:`~s2unet.models.calibration.Calibration`)
before the activation, and the probabilities are written into a float32 array in the
volume's served orientation.

A Predictor :meth:`~Predictor.harmonised` for a case applies its
:class:`~s2unet.predict.harmonise.CaseHarmoniser` to every prepared batch (intensity mapping,
field-of-view window) and puts the probabilities back into each input's own frame.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config, DataConfig
from ..data import (
    Case,
    CaseImage,
    prepare_image,
    prepare_slice,
    read_case,
    read_labels,
    resize_to,
    slice_as_volume,
    volume_value_range,
)
from ..data.fingerprint import spread_indices
from ..models.base import SegmentationModel
from ..models.calibration import Calibration
from .harmonise import CaseHarmoniser
from .postprocess import postprocess
from .precision import PRECISIONS, PrecisionChoice, autocast, choose_inference_precision, model_key

Progress = Callable[[int], None]


def channel_names(cfg: Config) -> list[str]:
    """Names of the model's output channels.

    Binary / multilabel: ``data.label_names``, else the last component of each ``data.labels``
    folder (``masks/lungs`` -> ``lungs``). Multiclass: ``label_names`` when it names every class
    (or every foreground class, then ``background`` is prepended), else ``class0``, ``class1``...

    Args:
        cfg: the model's config.

    Returns:
        ``cfg.out_channels`` names.
    """
    d = cfg.data
    if d.task == "multiclass":
        if len(d.label_names) == d.num_classes:
            return list(d.label_names)
        if len(d.label_names) == d.num_classes - 1:
            return ["background", *d.label_names]
        return [f"class{i}" for i in range(d.num_classes)]
    return list(d.label_names) if d.label_names else [Path(p).name for p in d.labels]


def foreground_names(cfg: Config) -> list[str]:
    """Names of the channels :func:`binarize` keeps as foreground (multiclass drops class 0)."""
    names = channel_names(cfg)
    return names[1:] if cfg.data.task == "multiclass" else names


def one_hot_foreground(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """(K - 1, *spatial) bool channels of classes 1..K-1 of an integer label map."""
    return label_map[None] == np.arange(1, num_classes).reshape(-1, *([1] * label_map.ndim))


def binarize(prob: np.ndarray, threshold: float, task: str) -> np.ndarray:
    """Foreground masks from probabilities.

    Args:
        prob: (C, *spatial) probabilities.
        threshold: binary / multilabel cut-off; foreground is ``prob >= threshold`` (the
            convention of :func:`s2unet.metrics.dice_for_thresholds`). Unused for multiclass.
        task: ``binary``, ``multilabel`` or ``multiclass``.

    Returns:
        bool (C, *spatial) for binary / multilabel; for multiclass the one-hot argmax of the
        foreground classes, (C - 1, *spatial) (class 0, background, has no channel).
    """
    if task == "multiclass":
        return one_hot_foreground(np.argmax(prob, axis=0), prob.shape[0])
    return prob >= threshold


def load_masks(paths: Sequence[Path], cfg: DataConfig) -> np.ndarray:
    """Reference (or lung) masks as foreground channels, in the model's served orientation.

    Each file is read by its format (:func:`~s2unet.io.formats.read_labels`): volumes: voxels
    > 0 are foreground (multiclass: an integer label map); 2D pictures: read with
    ``read_mask(path, cfg.mask_threshold)`` (multiclass: ``read_label_map``), exactly as the
    training datasets read labels.

    Args:
        paths: one file per label (binary / multilabel), or the single label map (multiclass).
        cfg: uses ``task``, ``num_classes``, ``reorient``, ``mask_threshold``.

    Returns:
        bool (C, *spatial), C as :func:`binarize` returns for the task.

    Raises:
        DataError: unreadable file (named in the message).
    """
    arrays = [read_labels(p, cfg.served, cfg.mask_threshold, cfg.task == "multiclass") for p in paths]
    if cfg.task == "multiclass":
        return one_hot_foreground(arrays[0].astype(np.int64), cfg.num_classes)
    return np.stack([a > 0 for a in arrays])


def load_case_target(case: Case, cfg: Config) -> np.ndarray:
    """The ground truth of a dataset case as :func:`binarize`-shaped channels (see :func:`load_masks`)."""
    return load_masks(case.labels, cfg.data)


class Predictor:
    """Runs a segmentation model over volumes and images.

    Args:
        model: a trained model (put in eval mode and moved to ``device`` here).
        cfg: the config it was trained with (preprocessing, image size, task).
        device: torch device.
        threshold: the binarisation threshold (from the checkpoint), kept for callers.
        batch_size: slices per forward pass.
        tta_flip: also predict the horizontally flipped input and average the probabilities.
        apply_postprocess: :meth:`clean` applies the config's ``postprocess`` section (off:
            only what the caller asks for).
        text: text-prompted models: phrase embeddings (P, D); the output has one channel per
            phrase, in order (``cfg`` then describes those P channels, see
            :func:`s2unet.text.query_config`).
        calibration: the checkpoint's calibration (``LoadedModel.calibration``), applied to the
            logits before the activation, so the probabilities and ``threshold`` are on the
            scale the threshold was chosen on; None: the identity (a model being trained).
        precision: ``auto`` (bf16 autocast only where measured faster with agreeing masks on
            this machine for this model, cached; :mod:`s2unet.predict.precision`), ``fp32`` or
            ``bf16``; resolved on first use, see :attr:`precision`.
    """

    def __init__(
        self,
        model: SegmentationModel,
        cfg: Config,
        device: Union[str, torch.device] = "cpu",
        threshold: float = 0.5,
        batch_size: int = 8,
        tta_flip: bool = False,
        apply_postprocess: bool = True,
        text: Optional[torch.Tensor] = None,
        calibration: Optional[Calibration] = None,
        precision: str = "auto",
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.tta_flip = bool(tta_flip)
        self.apply_postprocess = bool(apply_postprocess)
        self.text = None if text is None else text.to(self.device)
        self.calibration = Calibration() if calibration is None else calibration
        self.precision_mode = precision
        self._precision: Optional[PrecisionChoice] = None
        if self.text is not None and self.text.shape[0] != cfg.out_channels:
            raise ValueError(f"{self.text.shape[0]} phrase embeddings for a config of {cfg.out_channels} channels")
        self.harmoniser: Optional[CaseHarmoniser] = None

    def harmonised(self, harmoniser: Optional[CaseHarmoniser]) -> "Predictor":
        """This predictor (same model, settings) applying ``harmoniser`` to its inputs (None: none)."""
        other = copy.copy(self)
        other.harmoniser = harmoniser
        return other

    def sample_inputs(self, case: CaseImage, array: np.ndarray, at_most: int = 32) -> list[np.ndarray]:
        """Up to ``at_most`` of a decoded case's model inputs before resizing, evenly spread along
        the slice axis, prepared as the predict methods prepare them (what a case fingerprint measures).

        Args:
            case: the case (``read_case`` with this model's ``data.kind``).
            array: its decoded served volume, or a picture's (H, W) pixels.
            at_most: inputs returned.

        Returns:
            float32 (3, H, W) arrays in 0..1.
        """
        d = self.cfg.data
        if case.planar and case.values != "stored":
            return [prepare_image(array, d.normalize)]
        return self.volume_inputs(slice_as_volume(array, d.axis) if case.planar else array, at_most)

    def volume_inputs(self, volume: np.ndarray, at_most: int = 32) -> list[np.ndarray]:
        """Up to ``at_most`` model inputs of a served volume, as :meth:`sample_inputs` gives them."""
        d = self.cfg.data
        value_range = volume_value_range(volume)
        return [prepare_slice(volume, k, d, value_range) for k in spread_indices(volume.shape[d.axis], at_most)]

    @property
    def out_channels(self) -> int:
        """Channels of the probability arrays."""
        return self.cfg.out_channels

    @property
    def precision(self) -> PrecisionChoice:
        """The precision every forward of this predictor runs in, resolved on first use (an
        ``auto`` measurement costs a few forward passes once per machine and model)."""
        if self._precision is None:
            cfg, batch = self.cfg, self.batch_size

            def masks(x: torch.Tensor) -> np.ndarray:
                return self.binarize(self._activate(self._logits(x, None)).cpu().numpy())

            self._precision = choose_inference_precision(
                self.precision_mode, self.device, model_key(cfg.model.arch, cfg.model.encoder, cfg.data.image_size, batch),
                masks, cfg.data.image_size, batch)
        return self._precision

    def _logits(self, x: torch.Tensor, reference: Optional[torch.Tensor]) -> torch.Tensor:
        extra = {} if reference is None else {"reference": reference}
        if self.text is not None:
            extra["text"] = self.text
        return self.model.predict_logits(x, **extra).float()

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        logits = self.calibration.apply(logits)
        if self.cfg.data.task == "multiclass":
            return torch.softmax(logits, dim=1)
        return torch.sigmoid(logits)

    @torch.inference_mode()
    def predict_batch(self, inputs: np.ndarray, reference: Optional[np.ndarray] = None) -> np.ndarray:
        """Probabilities of a batch of prepared inputs, at the inputs' own size.

        Args:
            inputs: (B, 3, H, W) float32 in 0..1 at native resolution (as from
                ``prepare_slice``).
            reference: (B, C, H, W) masks a prompted model draws its prompts from (its box
                prompts); None for every other model.

        Returns:
            float32 (B, C, H, W) probabilities.
        """
        size = self.cfg.data.image_size
        frame = tuple(inputs.shape[-2:])
        if self.harmoniser is not None:
            inputs = self.harmoniser.apply(inputs)
            reference = None if reference is None else self.harmoniser.crop(reference)
        native = tuple(inputs.shape[-2:])
        # resize_to is the dataset's own resize (antialiased when shrinking); clamp as training does
        x = torch.stack([resize_to(item, size, "bilinear").clamp_(0.0, 1.0) for item in inputs]).to(self.device)
        ref = None
        if reference is not None:  # resized as the training masks are
            ref = torch.stack([resize_to(item.astype(np.float32), size, "nearest") for item in reference]).to(self.device)
        views = [(x, ref, False)]
        if self.tta_flip:
            views.append((x.flip(-1), None if ref is None else ref.flip(-1), True))
        prob = None
        for view, view_ref, flipped in views:
            with autocast(self.device, self.precision.dtype):
                logits = self._logits(view, view_ref)
            logits = F.interpolate(logits, size=native, mode="bilinear", align_corners=False)
            p = self._activate(logits)
            p = p.flip(-1) if flipped else p
            prob = p if prob is None else prob + p
        out = (prob / len(views)).cpu().numpy().astype(np.float32, copy=False)
        if self.harmoniser is None:
            return out
        return self.harmoniser.paste(out, frame, self.cfg.data.task == "multiclass")

    def binarize(self, prob: np.ndarray, threshold: Optional[float] = None) -> np.ndarray:
        """:func:`binarize` with this model's task and (by default) its threshold."""
        return binarize(prob, self.threshold if threshold is None else threshold, self.cfg.data.task)

    def clean(self, mask: np.ndarray, slice_axis: Optional[int], min_size: int = 0,
              region: Optional[np.ndarray] = None) -> np.ndarray:
        """Post-process a binarised prediction: the caller's cleaning plus the config's.

        Args:
            mask: (C, *spatial) foreground channels from :meth:`binarize`.
            slice_axis: the volume's slice axis (spatial index), None for a 2D image.
            min_size: drop components smaller than this (``infer.py --min-size``).
            region: keep only foreground inside (lungs).

        Returns:
            The cleaned bool mask (:func:`~s2unet.predict.postprocess.postprocess`).
        """
        post = self.cfg.postprocess
        if not self.apply_postprocess:
            return postprocess(mask, min_size, region)
        return postprocess(mask, min_size, region, post.keep_largest, post.fill_holes, slice_axis)

    def predict_case(self, case: Case, reference: Optional[np.ndarray] = None
                     ) -> tuple[np.ndarray, Optional[tuple[float, ...]]]:
        """Probabilities of a dataset case at its native size.

        Args:
            case: a volume or 2D picture case (its file's format decides which).
            reference: its (C, *spatial) reference masks, for a prompted model's box prompts.

        Returns:
            ``(prob (C, *spatial), spacing)``: the volume's served zooms, or None for pictures.
        """
        image = read_case(case.image, self.cfg.data.kind, self.cfg.data.served)
        if image.planar:
            return self.predict_picture(image, reference), None
        return self.predict_volume(image, reference=reference), image.zooms

    def predict_picture(self, picture: CaseImage, reference: Optional[np.ndarray] = None) -> np.ndarray:
        """Probabilities of a 2D picture case, (C, H, W) as displayed.

        Read for a model trained on volumes (stored values) it is a CT slice
        (:meth:`predict_slice`); read for an image model (0..1) it is an image (:meth:`predict_image`).

        Args:
            picture: a planar CaseImage (``read_case`` with this model's ``data.kind``).
            reference: (C, H, W) masks for a prompted model's box prompts.

        Returns:
            float32 (C, H, W).
        """
        predict = self.predict_slice if picture.values == "stored" else self.predict_image
        return predict(picture.picture(), reference)

    def predict_volume(self, vol: Union[CaseImage, np.ndarray], progress: Optional[Progress] = None,
                       reference: Optional[np.ndarray] = None) -> np.ndarray:
        """Probabilities of every slice of a volume along ``cfg.data.axis``.

        Args:
            vol: a CaseImage (decoded once here, in its stored dtype) or its already decoded
                served array.
            progress: called with the number of slices finished after each batch.
            reference: (C, *vol.shape) masks for a prompted model's box prompts.

        Returns:
            float32 (C, *vol.shape) in the served orientation.
        """
        array = vol.get_array() if isinstance(vol, CaseImage) else np.asarray(vol)
        if array.ndim != 3:
            raise ValueError(f"expected a 3D volume, got shape {array.shape}")
        axis = self.cfg.data.axis
        value_range = volume_value_range(array)  # once per volume, not per slice
        out = np.empty((self.out_channels, *array.shape), dtype=np.float32)
        out_slices = np.moveaxis(out, axis + 1, 1)  # (C, n, h, w) view
        n = array.shape[axis]
        for start in range(0, n, self.batch_size):
            ks = range(start, min(start + self.batch_size, n))
            out_slices[:, ks.start : ks.stop] = self.predict_planes(array, ks, value_range, reference)
            if progress is not None:
                progress(len(ks))
        return out

    def predict_planes(self, array: np.ndarray, planes: Sequence[int],
                       value_range: Optional[tuple[float, float]] = None,
                       reference: Optional[np.ndarray] = None) -> np.ndarray:
        """Probabilities of some slices of a decoded volume along ``cfg.data.axis``, prepared
        from the whole volume as :meth:`predict_volume` prepares them (window, 2.5D context).

        Args:
            array: the served, decoded (3D) volume.
            planes: slice indices, predicted ``batch_size`` at a time.
            value_range: ``volume_value_range(array)`` when already computed.
            reference: (C, *array.shape) masks for a prompted model's box prompts.

        Returns:
            float32 (C, len(planes), h, w).
        """
        if value_range is None:
            value_range = volume_value_range(array)
        planes = list(planes)
        if not planes:
            raise ValueError("predict_planes needs at least one slice index")
        # (n, C, h, w): the reference's planes in the order the slices are taken
        ref = None if reference is None else np.moveaxis(reference, self.cfg.data.axis + 1, 0)
        parts = [self.predict_batch(np.stack([prepare_slice(array, k, self.cfg.data, value_range)
                                              for k in planes[i : i + self.batch_size]]),
                                    None if ref is None else ref[planes[i : i + self.batch_size]])
                 for i in range(0, len(planes), self.batch_size)]
        return np.concatenate(parts).transpose(1, 0, 2, 3)

    def predict_slice(self, picture: np.ndarray, reference: Optional[np.ndarray] = None) -> np.ndarray:
        """Probabilities of one 2D CT slice for a model trained on volumes.

        The slice goes through :func:`~s2unet.data.slice_as_volume` and
        :meth:`predict_volume`, so windowing, normalisation and 2.5D context (the slice
        itself three times) are exactly those of a volume.

        Args:
            picture: (H, W) intensities as displayed (``read_slice_values``).
            reference: (C, H, W) masks as displayed, for a prompted model's box prompts.

        Returns:
            float32 (C, H, W), in the picture's layout.
        """
        axis = self.cfg.data.axis
        ref = None if reference is None else np.stack([slice_as_volume(r, axis) for r in reference])
        prob = self.predict_volume(slice_as_volume(picture, axis), reference=ref)
        return np.ascontiguousarray(np.take(prob, 0, axis=axis + 1).transpose(0, 2, 1))

    def predict_image(self, image: np.ndarray, reference: Optional[np.ndarray] = None) -> np.ndarray:
        """Probabilities of one 2D image.

        Args:
            image: (H, W) gray values in 0..1 (as ``s2unet.data.read_image`` returns; NaN is
                treated as 0 like the training dataset does).
            reference: (C, H, W) masks for a prompted model's box prompts.

        Returns:
            float32 (C, H, W).
        """
        ref = None if reference is None else reference[None]
        return self.predict_batch(prepare_image(image, self.cfg.data.normalize)[None], ref)[0]
