"""Training augmentation for radiographs and CT slices, built from monai dictionary transforms.

The transform takes and returns the dataset's sample dict: ``"image"`` float32 (3, S, S) in
0..1 and ``"mask"`` float32 (C, S, S) or, for multiclass, int64 (S, S). Geometry (affine, flips)
moves image and mask together (mask with nearest-neighbour interpolation so labels stay labels);
intensity changes touch the image only and the result is clamped back to 0..1.

Seeding. Every random monai transform owns a numpy RandomState. Three ways to make runs
reproducible, from most to least exact:

* Datasets built with a ``seed`` re-seed their transform for every item from
  ``(seed, epoch, index)`` (see ``SliceDataset.set_epoch``). The engine only has to call
  ``dataset.set_epoch(epoch)`` before each epoch, in the main process, before creating the
  DataLoader iterator (workers receive a copy of the dataset when they start). Results then do
  not depend on the number of workers or on resuming mid-epoch. (An index drawn twice in one
  epoch, as weighted sampling with replacement does, gets the same augmentation both times.)
* :func:`seed_worker`, passed as ``DataLoader(worker_init_fn=seed_worker)``, seeds each
  worker's transform from the seed torch gives that worker (``base_seed + worker_id``,
  itself drawn from the main process's torch generator): reproducible for a fixed number of
  workers when torch is seeded.
* :func:`seed_augment` seeds a transform directly (for ``num_workers=0`` or tests).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..config import AugmentConfig
from .intensity import clahe

# monai is imported inside build_augment: importing it costs several seconds (it pulls in its
# network zoo), which inference and the data check, which never augment, should not pay.

Sample = dict[str, Any]


class _PrepareMask:
    """Give a multiclass (S, S) label map a channel axis so spatial transforms accept it."""

    def __call__(self, data: Sample) -> Sample:
        d = dict(data)
        mask = d["mask"]
        d["_mask_had_channel"] = mask.ndim == 3
        if mask.ndim == 2:
            d["mask"] = mask[None]
        return d


class _Finish:
    """Clamp the image to 0..1, restore the mask's dtype/shape, return plain tensors.

    monai returns MetaTensors; the model and the collate function need none of the metadata,
    and plain tensors keep batches small and picklable across workers.
    """

    def __init__(self, mask_dtype_int: bool) -> None:
        self.mask_dtype_int = mask_dtype_int

    def __call__(self, data: Sample) -> Sample:
        d = dict(data)
        image = torch.as_tensor(d["image"])
        image = image.as_tensor() if hasattr(image, "as_tensor") else image
        d["image"] = image.float().clamp_(0.0, 1.0).contiguous()
        mask = torch.as_tensor(d["mask"])
        mask = mask.as_tensor() if hasattr(mask, "as_tensor") else mask
        if self.mask_dtype_int:
            mask = mask.round().long()
        else:
            mask = mask.float()
        if not d.pop("_mask_had_channel", True):
            mask = mask[0]
        d["mask"] = mask.contiguous()
        return d


def build_augment(cfg: AugmentConfig, task: str, image_size: int) -> Optional[Callable[[Sample], Sample]]:
    """Compose the training augmentation.

    Args:
        cfg: augmentation settings. ``rotate_deg`` is the maximum rotation in degrees,
            ``scale`` the maximum relative zoom (0.1 -> 0.9..1.1), ``translate`` the maximum shift
            as a fraction of the image side; all three are drawn together with probability
            ``affine_prob``. ``hflip`` / ``vflip`` are flip probabilities. ``brightness``
            scales intensities by 1 ± brightness, ``contrast`` stretches them around the mean
            by 1 ± contrast, ``gamma`` draws a gamma in 1 ± gamma, ``noise_std`` adds Gaussian
            noise; each with probability ``intensity_prob`` and skipped when 0.
            Robustness to other sources: ``crop_min`` (< 1) takes a random crop of
            ``crop_min``..1 of each side and resizes it back, ``zoom_out`` shrinks the image
            inside a zero border by up to ``1 / (1 + zoom_out)`` (both with probability
            ``affine_prob``); ``rot90`` is the probability of a random quarter turn (for data of
            unknown orientation); ``blur_sigma`` blurs with a Gaussian of sigma up to that
            (pixels) and ``clahe`` is the probability of CLAHE local contrast equalisation
            (with probability ``intensity_prob`` / ``clahe``). ``window_jitter`` acts before this
            transform, in the volume dataset (it needs Hounsfield units).
        task: ``binary``, ``multilabel`` or ``multiclass`` (decides the mask's dtype).
        image_size: side S of the (square) samples, to turn ``translate`` into pixels.

    Returns:
        A callable sample dict -> sample dict (a monai Compose, hence Randomizable), or None if
        augmentation is disabled or every setting is zero.
    """
    if not cfg.enabled:
        return None
    from monai.transforms import (
        Compose,
        Identityd,
        OneOf,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandLambdad,
        RandRotate90d,
        RandScaleCropd,
        RandScaleIntensityd,
        RandScaleIntensityFixedMeand,
        RandZoomd,
        Resized,
    )

    keys = ["image", "mask"]
    steps: list[Any] = []
    if cfg.crop_min < 1.0 and cfg.affine_prob > 0:
        crop = Compose([
            RandScaleCropd(keys=keys, roi_scale=cfg.crop_min, max_roi_scale=1.0, random_size=True),
            Resized(keys=keys, spatial_size=(image_size, image_size), mode=("bilinear", "nearest-exact")),
        ])
        steps.append(OneOf([crop, Identityd(keys=keys)], weights=[cfg.affine_prob, 1.0 - cfg.affine_prob]))
    if cfg.zoom_out > 0:
        steps.append(RandZoomd(keys=keys, prob=cfg.affine_prob, min_zoom=1.0 / (1.0 + cfg.zoom_out), max_zoom=1.0,
                               mode=("bilinear", "nearest-exact"), padding_mode="constant", keep_size=True))
    has_affine = cfg.affine_prob > 0 and (cfg.rotate_deg > 0 or cfg.scale > 0 or cfg.translate > 0)
    if has_affine:
        steps.append(
            RandAffined(
                keys=keys,
                prob=cfg.affine_prob,
                rotate_range=math.radians(cfg.rotate_deg) if cfg.rotate_deg > 0 else None,
                scale_range=(cfg.scale, cfg.scale) if cfg.scale > 0 else None,
                translate_range=(cfg.translate * image_size, cfg.translate * image_size) if cfg.translate > 0 else None,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",  # outside the field of view is black in X-rays and windowed CT
            )
        )
    # Channel-first (C, H, W): spatial axis 1 is the width (left/right), 0 the height.
    if cfg.hflip > 0:
        steps.append(RandFlipd(keys=keys, prob=cfg.hflip, spatial_axis=1))
    if cfg.vflip > 0:
        steps.append(RandFlipd(keys=keys, prob=cfg.vflip, spatial_axis=0))
    if cfg.rot90 > 0:
        steps.append(RandRotate90d(keys=keys, prob=cfg.rot90, max_k=3))
    if cfg.clahe > 0:  # its own probability: CLAHE is a kind of input, not a perturbation
        steps.append(RandLambdad(keys="image", func=clahe, prob=cfg.clahe))
    p = cfg.intensity_prob
    if p > 0:
        if cfg.brightness > 0:
            steps.append(RandScaleIntensityd(keys="image", factors=cfg.brightness, prob=p))
        if cfg.contrast > 0:
            steps.append(RandScaleIntensityFixedMeand(keys="image", factors=cfg.contrast, prob=p))
        if cfg.gamma > 0:
            steps.append(RandAdjustContrastd(keys="image", gamma=(max(0.05, 1 - cfg.gamma), 1 + cfg.gamma), prob=p))
        if cfg.blur_sigma > 0:
            sigma = (min(0.25, cfg.blur_sigma), cfg.blur_sigma)
            steps.append(RandGaussianSmoothd(keys="image", sigma_x=sigma, sigma_y=sigma, prob=p))
        if cfg.noise_std > 0:
            steps.append(RandGaussianNoised(keys="image", std=cfg.noise_std, prob=p))
    if not steps:
        return None
    return Compose([_PrepareMask(), *steps, _Finish(mask_dtype_int=task == "multiclass")])


def seed_augment(transform: Optional[Callable], seed: int) -> None:
    """Seed every random step of a transform built by :func:`build_augment`.

    Args:
        transform: the transform (None is allowed and ignored).
        seed: any non-negative integer (reduced modulo 2**32, numpy's limit).
    """
    # monai's Compose (a Randomizable) passes the seed on to each random step.
    if transform is not None and hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=int(seed) % (2**32))


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 32-bit seed for one (epoch, item) of a run.

    Args:
        seed: run seed.
        epoch: epoch number.
        index: dataset index.

    Returns:
        The seed.
    """
    return int(np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(index)]).generate_state(1)[0])


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=seed_worker)``: seed this worker's dataset augmentation.

    Looks through ``torch.utils.data.Subset``/``ConcatDataset`` wrappers for datasets with an
    ``augment`` attribute and seeds them with the worker's torch seed.

    Args:
        worker_id: given by the DataLoader (unused beyond the seed torch already mixed in).
    """
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    stack = [info.dataset]
    while stack:
        ds = stack.pop()
        if hasattr(ds, "augment"):
            seed_augment(ds.augment, info.seed)
        if hasattr(ds, "dataset"):
            stack.append(ds.dataset)
        stack.extend(getattr(ds, "datasets", []))
