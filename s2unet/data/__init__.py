"""Data: case discovery, splits, datasets, sampling and the pre-flight check.

Files are read through the case-format registry of :mod:`s2unet.io.formats` (re-exported here:
``read_case``, ``read_labels``, ``CaseImage``, and the 2D readers).

Expected dataset layout
=======================

All folders are given in the ``data`` section of the config and resolved against
``data.root`` (absolute folders are used as they are). Files are paired by **stem**: the file
name without the suffix of its format (``.nii.gz .nii .mha .mhd .nrrd .nhdr`` for volumes,
``.png .jpg .jpeg .tif .tiff .bmp .dcm .dicom`` for images, any case). Hidden files and other
sub-folders are ignored. Each stem is one *case* (one patient or image), the unit of every split.

2D images (``kind: image``) — X-rays, one mask file per structure::

    <root>/images/JPCLN001.png              data.images: images
    <root>/masks/lungs/JPCLN001.png         data.labels: [masks/lungs, masks/heart]
    <root>/masks/heart/JPCLN001.png         (one folder per label = one output channel)

  Images: 8/16-bit PNG, JPEG, TIFF (single page), BMP or single-frame DICOM (rescale applied,
  MONOCHROME1 inverted); colour becomes gray. Masks: 0/255, 0/1, bool or anti-aliased gray,
  foreground where ``value > mask_threshold * range``; label maps (whole numbers up to 31, e.g.
  0/1/2): every value > 0; a mask with non-zero values none of which passes is refused. ``task: binary`` uses exactly one label
  folder, ``multilabel`` one per structure (structures may overlap), ``multiclass`` a single
  folder of integer label maps 0..num_classes-1 (0 = background; palette PNGs give indices).

3D volumes (``kind: volume``) — NIfTI, MetaImage/NRRD (``.mha .mhd .nrrd .nhdr``) or a sub-folder
holding one DICOM series (case id = folder name), cut into 2D slices along ``data.axis``::

    <root>/images/case00.nii.gz             data.images: images
    <root>/masks_infection/case00.nii.gz    data.labels: [masks_infection]

  Each label volume must have the image's shape and affine (1e-3 tolerance). Binary /
  multilabel: voxels > 0 are foreground, one folder per label; multiclass: integer label
  maps in ``labels[0]``. With ``reorient: true`` slices are taken in the orientation convention
  (:data:`~s2unet.io.case.ORIENTATION`: each slice as 3D Slicer shows it); predictions are
  written back in the original one (:func:`save_like`).
  Volumes labelled on some slices only are listed in ``<root>/labelled_slices.json`` (the label
  app writes it; :mod:`.labelled`): only their listed slices train and score.

Run :func:`check_data` (or ``build_datasets``, which runs it) to list every missing pair,
unreadable file, shape/affine mismatch, NaN, or suspicious mask before training;
``build_datasets`` also refuses a train or val split in which every mask of a label is empty.

Typical use::

    bundle = build_datasets(cfg.data, seed=cfg.seed)
    sampler = make_train_sampler(bundle.train, cfg.data, num_samples=0, seed=cfg.seed)
    for epoch in range(epochs):
        sampler.set_epoch(epoch); bundle.train.set_epoch(epoch)
        loader = DataLoader(bundle.train, batch_size=8, sampler=sampler, num_workers=2)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..config import DataConfig
from .cases import Case, case_identity, find_cases, orphan_labels, resolve_dir
from .check import DataIssue, DataReport, check_data, count_nonfinite
from .datasets import (
    SliceDataset,
    VolumeCache,
    context_indices,
    label_slice,
    prepare_image,
    prepare_slice,
    resize_to,
    slice_as_volume,
)
from .errors import DataError
from .intensity import is_hu, volume_value_range, window_bounds, window_to_unit
from ..io.case import CaseImage, check_same_geometry
from ..io.formats import case_stem, read_case, read_labels
from ..io.nifti import load_nifti, save_like
from .phrases import PhraseSampleDataset
from ..io.pictures import IMAGE_SUFFIXES, read_dicom, read_image, read_label_map, read_mask, read_raw, read_slice_values
from .labelled import LabelledSlices, read_labelled_slices
from .mixing import RehearsalMix
from .sampling import EpochSampler, lesion_weights, share_weights
from .splits import kfold_partition, read_case_groups, split_cases
from .transforms import build_augment, item_seed, seed_augment, seed_worker

log = logging.getLogger(__name__)

__all__ = [
    "Case", "CaseImage", "DataBundle", "DataError", "DataIssue", "DataReport", "EpochSampler", "IMAGE_SUFFIXES", "LabelledSlices",
    "PhraseSampleDataset", "RehearsalMix", "SliceDataset", "VolumeCache", "build_augment", "build_datasets", "case_identity", "case_stem",
    "check_data", "check_same_geometry", "choose_train_items", "context_indices", "count_nonfinite", "find_cases", "item_seed", "kfold_partition",
    "label_slice", "lesion_weights", "prepare_image", "load_nifti", "make_train_sampler", "read_labelled_slices",
    "orphan_labels", "prepare_slice", "read_case", "read_case_groups", "read_dicom", "read_image", "read_label_map", "read_labels", "read_mask", "read_raw",
    "read_slice_values", "resize_to", "save_like", "slice_as_volume", "seed_augment", "seed_worker", "split_cases",
    "is_hu", "volume_value_range", "window_bounds", "window_to_unit",
]


@dataclass
class DataBundle:
    """Everything the engine needs from the data side.

    Attributes:
        train: training dataset (augmented); with rehearsal (``data.rehearse_from``) a
            :class:`RehearsalMix` of it and the rehearsed cases.
        val: validation dataset, or None when the split has no validation cases.
        test: test dataset, or None.
        split: case ids per split (``train`` / ``val`` / ``test``, and ``rehearsed``).
        cases: every case found.
        report: the data check's report (warnings included).
    """

    train: SliceDataset | RehearsalMix
    val: Optional[SliceDataset]
    test: Optional[SliceDataset]
    split: dict[str, list[str]]
    cases: list[Case] = field(default_factory=list)
    report: Optional[DataReport] = None


def build_datasets(cfg: DataConfig, seed: int, check: bool = True, val_max_cases: int = 0) -> DataBundle:
    """Find cases, check them (raising on fatal issues), split by case and build the datasets.

    Args:
        cfg: the data config.
        seed: run seed (split and augmentation).
        check: run :func:`check_data` first, and refuse a train or val split whose masks of a
            label are all empty (leave on; off only for repeated tests).
        val_max_cases: validation scores only the first N val cases (0 = all); those must
            hold foreground.

    Returns:
        The DataBundle.

    Raises:
        DataError: missing folders, fatal data issues (all listed), bad split lists, a split
            without foreground.
    """
    cases = find_cases(cfg)
    report = None
    if check:
        report = check_data(cfg, cases)
        for issue in report.warnings:
            log.warning("%s", issue)
        report.raise_if_fatal()
    groups = read_case_groups(resolve_dir(cfg, cfg.split.groups)) if cfg.split.mode == "group" else None
    split = split_cases([c.case_id for c in cases], cfg.split, seed, groups=groups)
    if report is not None:
        report.require_foreground(split, cfg, val_max_cases)
    by_id = {c.case_id: c for c in cases}

    def pick(name: str) -> list[Case]:
        return [by_id[i] for i in split[name]]

    labelled = read_labelled_slices(cfg, list(by_id))
    if labelled is not None:
        log.info("%s: %d volume(s) are labelled on some slices; only those slices train and score",
                 labelled.path, len(labelled.cases))
    train = SliceDataset(pick("train"), cfg, train=True, seed=seed, labelled=labelled)
    if cfg.max_train_slices:
        train.restrict(choose_train_items(len(train), cfg.max_train_slices, seed))
    val = SliceDataset(pick("val"), cfg, train=False, labelled=labelled) if split["val"] else None
    test = SliceDataset(pick("test"), cfg, train=False, labelled=labelled) if split["test"] else None
    return DataBundle(train=train, val=val, test=test, split=split, cases=cases, report=report)


def choose_train_items(n_items: int, n_keep: int, seed: int) -> list[int]:
    """The training items kept by ``data.max_train_slices``: a seeded choice of ``n_keep``.

    The first ``n_keep`` of one seeded permutation, so with one seed the 5 slices of a 5-slice
    run are among the 10 of a 10-slice run (a learning curve adds labels, it does not redraw).

    Args:
        n_items: training items (slices or images) available.
        n_keep: how many to keep.
        seed: run seed.

    Returns:
        Sorted item indices.

    Raises:
        DataError: more items asked for than the training split holds.
    """
    if n_keep > n_items:
        raise DataError(f"data.max_train_slices is {n_keep} but the training split holds only {n_items} slices/images")
    order = np.random.default_rng([int(seed), n_items]).permutation(n_items)
    return sorted(int(i) for i in order[:n_keep])


def make_train_sampler(
    dataset: SliceDataset | RehearsalMix,
    cfg: DataConfig,
    num_samples: Optional[int],
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> EpochSampler:
    """The training sampler, lesion-weighted when ``cfg.lesion_oversample > 0`` on volumes.

    Args:
        dataset: the training dataset; a :class:`RehearsalMix` gets its source share of the
            draws (each side keeping its lesion weighting).
        cfg: the data config.
        num_samples: samples per epoch over all ranks (e.g. steps_per_epoch * batch_size *
            world_size); 0 or None for one pass over the dataset.
        seed: run seed.
        rank: this process's rank.
        world_size: number of processes.

    Returns:
        The EpochSampler.
    """
    flags = dataset.lesion_flags()
    weights = None
    if cfg.lesion_oversample > 0 and flags is not None:
        weights = lesion_weights(flags, cfg.lesion_oversample)
    if isinstance(dataset, RehearsalMix):
        weights = share_weights(np.ones(len(dataset)) if weights is None else weights, dataset.rehearsed(), dataset.share)
    return EpochSampler(len(dataset), num_samples, seed, weights=weights, rank=rank, world_size=world_size)
