"""s2unet model checkpoints: the model's arguments, the run config and only what training
changed, written atomically and read back through a chain of format migrations.

A model checkpoint (``best.pt``) holds the :func:`~s2unet.models.create_model` arguments
(``model_args``), the resolved run config (preprocessing, labels), the trained tensors
(adapters, attention LoRA, decoder, heads; plus the encoder's own tensors when it is trained or
was built with ``model.weights: random``), the tuned threshold and the validation metrics. A
training checkpoint (``last.pt``) adds optimiser, scheduler, progress and RNG state for
``--resume``. Everything is plain tensors and builtins, so ``torch.load(..., weights_only=True)``
reads it.

Format versions:

- 1: ``format``, ``format_version``, ``config``, ``state_dict``, ``threshold``, ``metrics``
  (and the training state); the model was rebuilt from ``config["model"]``.
- 2: adds ``model_args``; the model is rebuilt from them.
- 3: the config's ``data.orientation`` records the orientation convention the model was trained
  in (:data:`s2unet.io.case.ORIENTATION`). Older volume models were trained on volumes served in
  closest RAS: migrated, they get :data:`~s2unet.io.case.LEGACY_ORIENTATION`, so they are run
  exactly as before, with a :class:`LegacyOrientationWarning` when loaded. Models trained on 2D
  pictures are unaffected (pictures are never reoriented) and get the convention.

A model checkpoint may also hold ``calibration`` (optional, any version): the temperature
fitted on validation (:meth:`~s2unet.models.calibration.Calibration.to_payload`); its
``threshold`` was chosen on the calibrated probabilities. A file without it (written before
calibration) is read with the identity, T 1, and predicts exactly as before.

A text-prompted model (either version, config section ``text`` enabled) also stores its phrase
bank under ``text`` (phrases, their embeddings as a tensor, the refusal cut-off; see
:meth:`s2unet.text.PhraseBank.to_payload`); in version 2 its ``model_args`` add the ``text_*``
arguments and ``out_channels`` 1.

Optional in version 2: ``fingerprint``, what the training inputs looked like
(:meth:`s2unet.data.fingerprint.Fingerprint.to_payload`; files written before it have none,
and inference then says that its check of far-off inputs is unavailable).

:func:`read_checkpoint` migrates an older file step by step to :data:`FORMAT_VERSION` in memory
(the file is not rewritten). A change to the format or to the config keys a checkpoint stores
adds a version and one migration step to :data:`MIGRATIONS`.
"""
from __future__ import annotations

import inspect
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import Config, ConfigError, config_from_dict, text_structures
from ..io import atomic_path
from ..io.case import LEGACY_ORIENTATION, ORIENTATION
from ..text import PhraseBank
from ..weights import CheckpointError, load_checkpoint_file
from . import check_input_size, create_model, model_args
from .base import SegmentationModel
from .calibration import Calibration
from .zoo import zoo_checkpoint

FORMAT = "s2unet-checkpoint"
FORMAT_VERSION = 3


class LegacyOrientationWarning(UserWarning):
    """A volume model trained before the orientation convention, run in its old orientation."""


@dataclass
class LoadedModel:
    """A trained model ready for inference, with what it was trained with."""

    model: SegmentationModel
    config: Config
    threshold: float
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    text: PhraseBank | None = None  # text-prompted models: known phrases, their embeddings, the cut-off
    calibration: Calibration = field(default_factory=Calibration)  # the identity for files without one
    fingerprint: dict[str, Any] | None = None  # the training inputs' fingerprint; None in older files
    # {"case", "sha256"} of each training case (s2unet.data.case_identity); None: not recorded
    trained_cases: list[dict[str, str]] | None = None

    @property
    def structure_text(self) -> torch.Tensor | None:
        """Phrase embeddings asking a text-prompted model for every structure in label order (by
        its first training phrase), so it answers like a multi-label model; None for other models."""
        return None if self.text is None else self.text.structure_queries().embeddings


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name beside ``path``, then rename over it.

    Args:
        obj: tensors and builtins.
        path: the final file.
    """
    # Serialised in memory first, then written: torch's writer turns a write error (a full disk)
    # into "RuntimeError ... unexpected pos", while a plain write raises OSError(ENOSPC), which
    # atomic_path names and the command line reports in one line. Checkpoints hold only the
    # trained tensors, so the copy is small.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(buffer.getbuffer())


def model_payload(model: SegmentationModel, cfg: Config, threshold: float, metrics: dict[str, Any], **extra: Any) -> dict:
    """The content of a model checkpoint (current format).

    Args:
        model: the model, built with ``model_args(cfg)``.
        cfg: the run config.
        threshold: the tuned binarisation threshold.
        metrics: validation metrics.
        extra: further entries (epoch, training state).

    Returns:
        The dict to :func:`atomic_save`.
    """
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_args": model_args(cfg),
        "config": cfg.to_dict(),
        "state_dict": model.trained_state_dict(),
        "threshold": float(threshold),
        "metrics": metrics,
        **extra,
    }


def _v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2: derive ``model_args`` from the stored config.

    Reads the config as version 1 wrote it (its ``model`` section and the channel rule of that
    time), not through today's ``Config``, so later config changes cannot break this step. A
    text-prompted model (its config's ``text`` section enabled) predicted one channel per phrase
    from the ``text`` settings of that section.
    """
    data, model = payload["config"]["data"], payload["config"]["model"]
    text = payload["config"].get("text") or {}
    if text.get("enabled"):
        extra = {"out_channels": 1, "text_model": text["model"], "text_injection": text["injection"],
                 "text_hidden": text["hidden"], "text_tokens": text["tokens"]}
    elif data["task"] == "multiclass":
        extra = {"out_channels": data["num_classes"]}
    else:
        extra = {"out_channels": max(1, len(data["label_names"]) or len(data["labels"]))}
    return {**payload, "format_version": 2, "model_args": {**model, **extra}}


def _v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
    """Format 2 -> 3: record the orientation a model was trained in, ``data.orientation``.

    Before it, volumes were served in closest RAS (:data:`LEGACY_ORIENTATION`); a model trained
    on 2D pictures never saw a reoriented array, so it gets today's convention.
    """
    data = payload["config"]["data"]
    orientation = LEGACY_ORIENTATION if data.get("kind") == "volume" else ORIENTATION
    config = {**payload["config"], "data": {**data, "orientation": orientation}}
    return {**payload, "format_version": 3, "config": config}


# format_version -> the step that turns a payload of that version into the next one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


def legacy_orientation_warning(cfg: Config, source: str | Path) -> str | None:
    """Why a model reads volumes in the pre-convention orientation, or None when it does not.

    Args:
        cfg: the model's config.
        source: the checkpoint, named in the message.
    """
    data = cfg.data
    if data.kind != "volume" or not data.reorient or data.orientation != LEGACY_ORIENTATION:
        return None
    return (f"{source} was trained before the orientation convention {ORIENTATION!r}: it reads volumes in the "
            f"old closest-RAS orientation ({LEGACY_ORIENTATION!r}, slices anterior-down), and is run that way so "
            "it predicts as before. A CT model trained on the shared data before 2026-12-07 also saw wrong "
            "(identity) headers, its two sources flipped front-to-back against each other: retrain it")


def migrate_checkpoint(payload: dict[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """Bring a checkpoint's content to :data:`FORMAT_VERSION`, one step per version.

    Args:
        payload: what an s2unet checkpoint file holds (a missing ``format_version`` is read
            as 1, the first).
        source: the file, named in errors.

    Returns:
        A new dict in the current format (the input is not changed).

    Raises:
        CheckpointError: a version newer than this s2unet reads, or one it has no migration for.
    """
    version = payload.get("format_version", 1)
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{source}: format_version {version!r} is not a version s2unet ever wrote")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has checkpoint format_version {version}, but this s2unet reads versions 1 to "
            f"{FORMAT_VERSION}: it was written by a newer s2unet; update s2unet to load it"
        )
    while version < FORMAT_VERSION:
        payload = MIGRATIONS[version](payload)
        version = payload["format_version"]
    return payload


def read_checkpoint(path: str | Path) -> dict:
    """Load an s2unet checkpoint file safely, check that it is one and migrate it.

    Args:
        path: a ``best.pt`` / ``last.pt``, or the name of a model of the zoo (:mod:`.zoo`).

    Returns:
        Its content in the current format.

    Raises:
        CheckpointError: a missing or unreadable file, not an s2unet checkpoint, a format
            this s2unet cannot read, an entry missing (``config``, ``model_args``,
            ``state_dict``), a threshold outside (0, 1) or NaN/inf tensors (naming them).
    """
    path = Path(path)
    if not path.is_file():
        if path.parent != Path(".") or path.suffix in (".pt", ".pth"):  # a file, not a zoo model's name
            raise CheckpointError(f"checkpoint {path} does not exist")
        path = zoo_checkpoint(path.name)
    payload = load_checkpoint_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an s2unet checkpoint (no '{FORMAT}' marker); encoder files such as "
            "sam2.1_hiera_tiny.pt go into model.weights, not --checkpoint"
        )
    for key in ("config", "state_dict"):  # the migration reads the config
        _require(payload, key, path)
    payload = migrate_checkpoint(payload, str(path))
    _require(payload, "model_args", path)
    _check_values(payload, path)
    return payload


def _require(payload: dict[str, Any], key: str, path: Path) -> None:
    """Refuse a checkpoint without one of the entries every s2unet checkpoint holds."""
    if key not in payload:
        raise CheckpointError(f"{path}: this s2unet checkpoint has no {key!r} entry (training writes config, "
                              "model_args, state_dict and threshold); the file is incomplete or was edited")


def _check_values(payload: dict[str, Any], path: Path) -> None:
    """Refuse a threshold outside (0, 1) and non-finite tensors: loaded, they give empty masks
    (or NaN scores) without a word."""
    threshold = payload.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise CheckpointError(f"{path}: its stored threshold is {threshold!r}, not a number in (0, 1)")
    state = payload["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its state_dict is a {type(state).__name__}, not a dict of tensors")
    bad = [k for k, t in state.items() if isinstance(t, torch.Tensor) and t.is_floating_point()
           and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(f"{path}: state_dict tensor(s) {shown} hold NaN or inf values; the model is broken "
                              "(a diverged or damaged run): use another checkpoint")


def checkpoint_config(payload: dict[str, Any], source: str | Path) -> Config:
    """The run config a checkpoint stores, read with this version's defaults.

    Args:
        payload: from :func:`read_checkpoint`.
        source: how errors name the file (a path, or ``--init-from PATH``).

    Returns:
        The Config.

    Raises:
        CheckpointError: the stored config is not valid for this s2unet version.
    """
    try:
        return config_from_dict(payload["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{source}: its config is not valid for this s2unet version: {exc}") from exc


def load_model_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a trained model: encoder from its weights file, then the stored tensors (which
    replace a random encoder's fresh draw with the one it was trained with).

    Args:
        path: a ``best.pt``/``last.pt`` written by training.
        device: where to put the model.

    Returns:
        The model in eval mode with its config, threshold, validation metrics, calibration
        (the identity when the file has none) and (text-prompted models) phrase bank.

    Warns:
        LegacyOrientationWarning: a volume model trained before the orientation convention.

    Raises:
        CheckpointError: see :func:`read_checkpoint`; a config this s2unet refuses; tensors
            that do not fit the model; an image size the
            encoder cannot take included; a calibration that is not a temperature > 0; a text-prompted model's phrase bank missing or naming other structures than its config.
    """
    payload = read_checkpoint(path)
    cfg = checkpoint_config(payload, path)
    try:  # in range for the config, yet an input size the encoder cannot take
        check_input_size(cfg)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its config is not usable: {exc}") from None
    legacy = legacy_orientation_warning(cfg, path)
    if legacy is not None:
        warnings.warn(legacy, LegacyOrientationWarning, stacklevel=2)
    bank = PhraseBank.from_payload(payload.get("text"), cfg.text, source=str(path)) if cfg.text.enabled else None
    if bank is not None and bank.structures != [s.label for s in text_structures(cfg)]:
        raise CheckpointError(f"{path}: its phrase bank names {bank.structures}, its config another set of structures")
    args = payload["model_args"]
    unknown = sorted(set(args) - set(inspect.signature(create_model).parameters))
    if unknown:
        raise CheckpointError(f"{path}: model_args {unknown} are not arguments of this s2unet's create_model")
    # The config describes the model too (``--init-from`` and the reports read it): a file whose
    # two descriptions differ was edited by hand and would run one model under the other's name.
    # An argument the file does not store was added to create_model after it was written: its
    # default is the behaviour of that time, and the config fills in the same default.
    described = model_args(cfg)
    differing = sorted(k for k in args if args[k] != described.get(k))
    if differing:
        raise CheckpointError(f"{path}: its model_args and its config's model section differ in {differing}")
    model = create_model(**args)
    model.load_trained_state_dict(payload["state_dict"], source=str(path))
    calibration = Calibration.from_payload(payload.get("calibration"), str(path))
    model.to(device).eval()
    trained = payload.get("trained_cases")
    if trained is not None and not (isinstance(trained, list) and all(
            isinstance(t, dict) and isinstance(t.get("case"), str) and isinstance(t.get("sha256"), str) for t in trained)):
        raise CheckpointError(f"{path}: its trained_cases entry is not a list of {{'case', 'sha256'}} records")
    return LoadedModel(model, cfg, float(payload.get("threshold", 0.5)), dict(payload.get("metrics", {})), Path(path),
                       bank, calibration, payload.get("fingerprint"), trained)
