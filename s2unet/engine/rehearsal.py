"""Rehearsal while fine-tuning (``data.rehearse_from``): the training cases a checkpoint learnt from.

A model fine-tuned for a few steps on a handful of new labels drifts away from what it knew;
drawing part of every batch from its original training cases keeps it there while it adapts.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import Config
from ..data import DataBundle, DataError, RehearsalMix, SliceDataset, build_datasets
from ..models.checkpoint import checkpoint_config, read_checkpoint
from ..weights import CheckpointError
from .checkpoint import kind_and_labels


def rehearsal_source(cfg: Config) -> SliceDataset:
    """The training set of the run that wrote ``cfg.data.rehearse_from``, prepared for this run.

    Where the cases are and how they were split (and limited) comes from the checkpoint's own
    config and seed, so these are the cases it trained on; how slices become inputs (image size,
    window, normalisation, context slices, augmentation) comes from this run, so one batch
    holds one kind of input.

    Args:
        cfg: this run's config.

    Returns:
        The source's training dataset.

    Raises:
        CheckpointError: no such file, not an s2unet checkpoint, a different task or label
            count, other label names or another image kind (2D pictures vs volumes).
        DataError: the source's cases cannot be found or read (naming the checkpoint).
    """
    path = cfg.data.rehearse_from
    if not Path(path).is_file():
        raise CheckpointError(f"data.rehearse_from {path}: no such checkpoint file")
    saved = checkpoint_config(read_checkpoint(path), f"data.rehearse_from {path}")
    if (saved.data.task, saved.out_channels) != (cfg.data.task, cfg.out_channels):
        raise CheckpointError(f"data.rehearse_from {path}: its task is {saved.data.task} with {saved.out_channels} "
                              f"output channels, this run's {cfg.data.task} with {cfg.out_channels}")
    differ = kind_and_labels(saved, cfg)
    if differ:  # its cases would be trained on as this run's structures
        raise CheckpointError(f"data.rehearse_from {path}: {'; '.join(differ.values())}; rehearsal needs a "
                              "checkpoint trained on the same kind of images and the same labels")
    s = saved.data
    data = dataclasses.replace(
        cfg.data, kind=s.kind, root=s.root, images=s.images, labels=s.labels, label_names=s.label_names,
        mask_threshold=s.mask_threshold, axis=s.axis, reorient=s.reorient, split=s.split,
        max_train_slices=s.max_train_slices, labelled_slices=s.labelled_slices, lesion_oversample=s.lesion_oversample,
        rehearse_from="")
    try:
        return build_datasets(data, saved.seed).train
    except DataError as exc:
        raise DataError(f"data.rehearse_from {path}: its training cases under {s.root}: {exc}") from exc


def with_rehearsal(bundle: DataBundle, cfg: Config) -> DataBundle:
    """The run's data with the rehearsed cases mixed into training when ``data.rehearse_from``
    names a checkpoint (at ``data.rehearse_share`` of the draws), else unchanged.

    The rehearsed case ids are added to the split as ``rehearsed`` (saved in ``split.json``).
    """
    if not cfg.data.rehearse_from:
        return bundle
    source = rehearsal_source(cfg)
    rehearsed = list(dict.fromkeys(case for case, _ in source.items))
    return dataclasses.replace(bundle, train=RehearsalMix(bundle.train, source, cfg.data.rehearse_share),
                               split={**bundle.split, "rehearsed": rehearsed})
