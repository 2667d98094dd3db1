"""Fine-tuning from a trained model's checkpoint (``train.py --init-from``).

Writing, reading, migrating and loading checkpoints is :mod:`s2unet.models.checkpoint`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import Config
from ..models import SegmentationModel, model_args
from ..models.checkpoint import checkpoint_config, read_checkpoint
from ..predict import channel_names
from ..weights import CheckpointError

# Data keys that change what the model's inputs mean: a fine-tuning run that differs in them
# starts from features learnt for other inputs, which is allowed but worth a warning.
_INPUT_KEYS = ("image_size", "window", "context_slices", "normalize", "axis", "reorient", "orientation")
_KINDS = {"image": "2D pictures", "volume": "volumes"}


def kind_and_labels(saved: Config, cfg: Config) -> dict[str, str]:
    """How a checkpoint's training data differs from this run's in what it shows and what its
    channels mean, which no input setting makes up for.

    Args:
        saved: the checkpoint's config.
        cfg: this run's.

    Returns:
        ``{"kind": ..., "labels": ...}`` for what differs, each naming both sides, e.g.
        ``"data.kind is 'image' (2D pictures) there but 'volume' (volumes) here"``.
    """
    differ = {}
    if saved.data.kind != cfg.data.kind:
        differ["kind"] = (f"data.kind is {saved.data.kind!r} ({_KINDS[saved.data.kind]}) there but "
                          f"{cfg.data.kind!r} ({_KINDS[cfg.data.kind]}) here")
    theirs, ours = channel_names(saved), channel_names(cfg)
    if theirs != ours:
        differ["labels"] = f"its labels are {theirs} but this run's are {ours}"
    return differ


def init_from_checkpoint(model: SegmentationModel, cfg: Config, path: str | Path, relabel: bool = False) -> list[str]:
    """Start training from a trained model's tensors (``train.py --init-from RUN/best.pt``).

    Only the trained tensors are taken; optimiser, schedule and progress start afresh, so this
    fine-tunes (e.g. on a few labelled cases of a new hospital) rather than resumes.

    Args:
        model: the freshly built model of this run.
        cfg: this run's config; its ``model`` section and label layout must equal the
            checkpoint's (``model.weights`` may differ: the encoder is frozen and loaded anew).
        path: an s2unet checkpoint.
        relabel: start from it although its label names differ (``--init-relabel``): its
            channels are then re-learnt as this run's labels.

    Returns:
        Warnings about input preprocessing that differs from the checkpoint's (data keys
        ``image_size``, ``window``, ``context_slices``, ``normalize``, ``axis``, ``reorient``,
        ``orientation``), about another image kind (2D pictures vs volumes: a transfer, e.g. lungs
        on X-rays to lungs on CT slices) and, with ``relabel``, about other label names.

    Raises:
        CheckpointError: not an s2unet checkpoint, a different architecture / label layout,
            naming the first differing key, or other label names without ``relabel``.
    """
    payload = read_checkpoint(path)
    saved = checkpoint_config(payload, f"--init-from {path}")
    # The file's model: its stored arguments, and for arguments added to create_model since it was
    # written, the default its config is read with today (the behaviour of that time).
    theirs, ours = {**model_args(saved), **payload["model_args"]}, model_args(cfg)
    model_keys = {f.name for f in dataclasses.fields(cfg.model)}
    for key in sorted((theirs.keys() | ours.keys()) - {"weights", "out_channels"}):
        if theirs.get(key) != ours.get(key):
            name = f"model.{key}" if key in model_keys else f"model argument {key}"
            raise CheckpointError(f"--init-from {path}: {name} is {theirs.get(key)!r} there but {ours.get(key)!r} "
                                  "in this run; fine-tuning needs the same model")
    for key in ("task", "num_classes"):
        if getattr(saved.data, key) != getattr(cfg.data, key):
            raise CheckpointError(f"--init-from {path}: data.{key} is {getattr(saved.data, key)!r} there but "
                                  f"{getattr(cfg.data, key)!r} in this run; fine-tuning needs the same model")
    differ = kind_and_labels(saved, cfg)
    if "labels" in differ and not relabel:
        # Same channel count, other meaning: most likely the wrong file (an X-ray lung model for
        # CT lesions), and training would silently turn its lungs into this run's label.
        raise CheckpointError(f"--init-from {path}: {differ['labels']}; that is most likely another model's "
                              "checkpoint (give --init-relabel to start from it anyway)")
    model.load_trained_state_dict(payload["state_dict"], source=f"--init-from {path}")
    there, here = saved.to_dict()["data"], cfg.to_dict()["data"]
    return [f"--init-from {path}: {text}" for text in differ.values()] + [
        f"--init-from {path}: data.{key} is {there[key]!r} there but {here[key]!r} here"
        for key in _INPUT_KEYS if there[key] != here[key]]
