"""The model zoo: ready-made s2unet checkpoints known by name (``cxr-lungs``).

The registry is ``zoo.json`` in the zoo folder (``weights/zoo/`` of the checkout, or
``$S2UNET_ZOO``)::

    {"format": "s2unet-zoo",
     "models": {"cxr-lungs": {"file": "cxr-lungs.pt", "sha256": "<hex>",
                              "command": "python train.py --config cxr_lung.yaml ...",
                              "val_dice": 0.97, "licence": "JSRT/SCR: ..."}}}

A name resolves to its file in the zoo folder after its sha256 is checked, so a damaged or
replaced file is refused; the file is then read like any checkpoint
(:func:`s2unet.models.checkpoint.read_checkpoint`, ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..io.names import did_you_mean
from ..weights import REPO_ROOT, CheckpointError, verify_sha256

ZOO_ENV = "S2UNET_ZOO"
ZOO_FORMAT = "s2unet-zoo"
ENTRY_KEYS = ("file", "sha256", "command", "val_dice", "licence")


@dataclass(frozen=True)
class ZooModel:
    """One registered model: its file (in the zoo folder) and how it was made.

    Attributes:
        name: the registry name, e.g. ``cxr-lungs``.
        path: the checkpoint file.
        sha256: its hex digest.
        command: the command that trained it.
        val_dice: its validation Dice.
        licence: the licence of the data it was trained on.
    """

    name: str
    path: Path
    sha256: str
    command: str
    val_dice: float
    licence: str


def zoo_folder() -> Path:
    """``$S2UNET_ZOO`` when set, else the checkout's ``weights/zoo``."""
    env = os.environ.get(ZOO_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / "weights" / "zoo"


def zoo_models() -> dict[str, ZooModel]:
    """The registered models by name (none when the folder has no ``zoo.json``).

    Raises:
        CheckpointError: ``zoo.json`` is not valid JSON, not an s2unet zoo, or an entry lacks a key.
    """
    folder = zoo_folder()
    registry = folder / "zoo.json"
    if not registry.is_file():
        return {}
    try:
        data = json.loads(registry.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{registry}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != ZOO_FORMAT or not isinstance(data.get("models"), dict):
        raise CheckpointError(f"{registry}: expected {{\"format\": \"{ZOO_FORMAT}\", \"models\": {{name: entry}}}}")
    models = {}
    for name, entry in data["models"].items():
        missing = [k for k in ENTRY_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise CheckpointError(f"{registry}: model {name!r} lacks {', '.join(missing)}")
        models[name] = ZooModel(name, folder / entry["file"], str(entry["sha256"]), str(entry["command"]),
                                float(entry["val_dice"]), str(entry["licence"]))
    return models


def zoo_checkpoint(name: str) -> Path:
    """The checked file of a zoo model.

    Args:
        name: a registry name.

    Returns:
        The checkpoint file, its sha256 verified.

    Raises:
        CheckpointError: an unknown name (listing the known ones), a registered file that is
            missing, or one whose sha256 differs from the registry's.
    """
    models = zoo_models()
    registry = zoo_folder() / "zoo.json"
    if name not in models:
        close = did_you_mean(name, list(models))
        hint = f" (did you mean {close!r}?)" if close else ""
        known = ", ".join(sorted(models)) or f"none yet, {registry} lists no models"
        raise CheckpointError(f"checkpoint {name} is neither a file nor a model of the zoo{hint}; known models: {known}")
    model = models[name]
    if not model.path.is_file():
        raise CheckpointError(f"zoo model {name!r}: its file {model.path} is missing (listed in {registry}; "
                              f"made by: {model.command})")
    verify_sha256(model.path, model.sha256)
    return model.path
