"""s2unet checkpoints: the config plus only what training changed, written atomically.

A model checkpoint (``best.pt``) holds the resolved config, the trained tensors (adapters,
attention LoRA, decoder, heads; plus the encoder's own tensors when it is trained or was built
with ``model.weights: random``), the tuned threshold and the validation metrics. A training
checkpoint (``last.pt``) adds optimiser, scheduler, progress and RNG state for ``--resume``.
Everything is plain tensors and builtins, so ``torch.load(..., weights_only=True)`` reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ConfigError, config_from_dict
from ..io import atomic_path
from ..models import SegmentationModel, create_model
from ..weights import CheckpointError, load_checkpoint_file

FORMAT = "s2unet-checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A trained model ready for inference, with what it was trained with."""

    model: SegmentationModel
    config: Config
    threshold: float
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name beside ``path``, then rename over it."""
    # Through a Python file object: a full disk then raises OSError(ENOSPC), where torch's own
    # file writer raises an unspecific RuntimeError.
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)


def model_payload(model: SegmentationModel, cfg: Config, threshold: float, metrics: dict[str, Any], **extra: Any) -> dict:
    """The content of a model checkpoint."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "state_dict": model.trained_state_dict(),
        "threshold": float(threshold),
        "metrics": metrics,
        **extra,
    }


def read_checkpoint(path: str | Path) -> dict:
    """Load an s2unet checkpoint file safely and check that it is one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    payload = load_checkpoint_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an s2unet checkpoint (no '{FORMAT}' marker); encoder files such as "
            "sam2.1_hiera_tiny.pt go into model.weights, not --checkpoint"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer s2unet (format {payload['format_version']})")
    return payload


def load_model_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a trained model: encoder from its weights file, then the stored tensors (which
    replace a random encoder's fresh draw with the one it was trained with).

    Args:
        path: a ``best.pt``/``last.pt`` written by training.
        device: where to put the model.

    Returns:
        The model in eval mode with its config, threshold and validation metrics.
    """
    payload = read_checkpoint(path)
    try:
        cfg = config_from_dict(payload["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its config is not valid for this s2unet version: {exc}") from exc
    model = create_model(cfg)
    try:
        model.load_trained_state_dict(payload["state_dict"], source=str(path))
    except KeyError as exc:
        raise CheckpointError(str(exc.args[0])) from None
    model.to(device).eval()
    return LoadedModel(model, cfg, float(payload.get("threshold", 0.5)), dict(payload.get("metrics", {})), Path(path))


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
    try:
        model.load_trained_state_dict(payload["state_dict"], source=f"--init-from {path}")
    except KeyError as exc:
        raise CheckpointError(str(exc.args[0])) from None
    return [f"--init-from {path}: data.{key} is {saved['data'].get(key)!r} there but {ours['data'][key]!r} here"
            for key in _INPUT_KEYS if saved.get("data", {}).get(key) != ours["data"][key]]
