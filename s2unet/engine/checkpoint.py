"""Fine-tuning from a trained model's checkpoint (``train.py --init-from``).

Writing, reading, migrating and loading checkpoints is :mod:`s2unet.models.checkpoint`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import Config
from ..models import SegmentationModel, model_args
from ..models.checkpoint import checkpoint_config, read_checkpoint
from ..weights import CheckpointError

# Data keys that change what the model's inputs mean: a fine-tuning run that differs in them
# starts from features learnt for other inputs, which is allowed but worth a warning.
_INPUT_KEYS = ("image_size", "window", "context_slices", "normalize", "axis", "reorient", "orientation")


def init_from_checkpoint(model: SegmentationModel, cfg: Config, path: str | Path) -> list[str]:
    """Start training from a trained model's tensors (``train.py --init-from RUN/best.pt``).

    Only the trained tensors are taken; optimiser, schedule and progress start afresh, so this
    fine-tunes (e.g. on a few labelled cases of a new hospital) rather than resumes.

    Args:
        model: the freshly built model of this run.
        cfg: this run's config; its ``model`` section and label layout must equal the
            checkpoint's (``model.weights`` may differ: the encoder is frozen and loaded anew).
        path: an s2unet checkpoint.

    Returns:
        Warnings about input preprocessing that differs from the checkpoint's (data keys
        ``image_size``, ``window``, ``context_slices``, ``normalize``, ``axis``, ``reorient``,
        ``orientation``).

    Raises:
        CheckpointError: not an s2unet checkpoint, or a different architecture / label layout,
            naming the first differing key.
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
    try:
        model.load_trained_state_dict(payload["state_dict"], source=f"--init-from {path}")
    except KeyError as exc:
        raise CheckpointError(str(exc.args[0])) from None
    there, here = saved.to_dict()["data"], cfg.to_dict()["data"]
    return [f"--init-from {path}: data.{key} is {there[key]!r} there but {here[key]!r} here"
            for key in _INPUT_KEYS if there[key] != here[key]]
