"""Fine-tuning from a trained model's checkpoint (``train.py --init-from``).

Writing, reading, migrating and loading checkpoints is :mod:`s2unet.models.checkpoint`.
"""
from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..models import SegmentationModel, model_args
from ..models.checkpoint import read_checkpoint
from ..weights import CheckpointError

# Data keys that change what the model's inputs mean: a fine-tuning run that differs in them
# starts from features learnt for other inputs, which is allowed but worth a warning.
_INPUT_KEYS = ("image_size", "window", "context_slices", "normalize", "axis", "reorient")


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
        ``image_size``, ``window``, ``context_slices``, ``normalize``, ``axis``, ``reorient``).

    Raises:
        CheckpointError: not an s2unet checkpoint, or a different architecture / label layout,
            naming the first differing key.
    """
    payload = read_checkpoint(path)
    saved = payload["config"]
    ours = cfg.to_dict()
    for section, keys in (("model", [k for k in ours["model"] if k != "weights"]),
                          ("data", ["task", "num_classes"])):
        for key in keys:
            if saved.get(section, {}).get(key) != ours[section][key]:
                raise CheckpointError(
                    f"--init-from {path}: {section}.{key} is {saved.get(section, {}).get(key)!r} there but "
                    f"{ours[section][key]!r} in this run; fine-tuning needs the same model"
                )
    # Model arguments beyond the model section (a text-prompted model's text_*) must agree too.
    theirs, args = payload["model_args"], model_args(cfg)
    for key in sorted((theirs.keys() | args.keys()) - ours["model"].keys() - {"out_channels"}):
        if theirs.get(key) != args.get(key):
            raise CheckpointError(f"--init-from {path}: model argument {key} is {theirs.get(key)!r} there but "
                                  f"{args.get(key)!r} in this run; fine-tuning needs the same model")
    try:
        model.load_trained_state_dict(payload["state_dict"], source=f"--init-from {path}")
    except KeyError as exc:
        raise CheckpointError(str(exc.args[0])) from None
    return [f"--init-from {path}: data.{key} is {saved['data'].get(key)!r} there but {ours['data'][key]!r} here"
            for key in _INPUT_KEYS if saved.get("data", {}).get(key) != ours["data"][key]]
