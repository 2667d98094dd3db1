"""Continuing a run (``train.py --resume RUN``): its own config, checked against its records.

A resumed run must stay the run it continues, so its config comes from ``last.pt``, which must
agree with the run's ``config.yaml``; ``--set`` may change only the keys of :data:`RESUME_KEYS`,
which alter neither the model nor the data it sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..config import Config, ConfigError, config_from_dict, load_config, load_layered, parse_override, validate
from ..models.checkpoint import read_checkpoint
from ..weights import CheckpointError

#: The keys ``--set`` may change on ``--resume``, and what changing them does.
RESUME_KEYS: dict[str, str] = {
    "train.epochs": "run to this many epochs in all (the cosine learning-rate decay is stretched to the new total)",
    "train.val_every": "validate every N epochs from now on",
    "train.threads": "torch threads of this process",
    "data.num_workers": "data-loading worker processes",
}


@dataclass
class ResumePoint:
    """What a resumed run continues from.

    Attributes:
        config: the run's config with the allowed ``--set`` changes applied.
        checkpoint: the content of ``last.pt`` (state dicts, progress, RNG state).
    """

    config: Config
    checkpoint: dict[str, Any]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are values, not levels."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The dotted keys whose values differ between two config dicts.

    Args:
        old: a config as nested values (``Config.to_dict()``).
        new: another.

    Returns:
        ``{key: (old value, new value)}``, sorted by key; a key missing on one side has None there.
    """
    a, b = _flatten(old), _flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def load_resume(run_dir: str | Path, overrides: Sequence[str] = ()) -> ResumePoint:
    """Read and check what ``--resume run_dir`` continues from.

    Args:
        run_dir: a run directory holding ``last.pt`` and ``config.yaml``.
        overrides: ``key=value`` strings; only keys of :data:`RESUME_KEYS`.

    Returns:
        The ResumePoint.

    Raises:
        CheckpointError: no ``last.pt``, or one whose config differs from ``config.yaml``
            outside :data:`RESUME_KEYS` (the differing keys are named).
        ConfigError: an override of another key, a bad value, or fewer epochs than are done.
    """
    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    if not last.is_file():
        raise CheckpointError(f"--resume {run_dir}: no last.pt in that directory")
    saved = read_checkpoint(last)
    try:
        stored = config_from_dict(saved["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{last}: its config is not valid for this s2unet version: {exc}") from exc
    recorded = load_config(run_dir / "config.yaml")
    differ = {k: v for k, v in config_differences(stored.to_dict(), recorded.to_dict()).items() if k not in RESUME_KEYS}
    if differ:
        shown = "; ".join(f"{k}: {a!r} in last.pt, {b!r} in config.yaml" for k, (a, b) in differ.items())
        raise CheckpointError(
            f"--resume {run_dir}: last.pt was written with another config than config.yaml ({shown}); "
            "refusing to guess which run to continue"
        )
    for item in overrides:
        for key in _flatten(parse_override(item)):
            if key not in RESUME_KEYS:
                raise ConfigError(
                    f"--resume: --set {key} would change the run being continued; only "
                    f"{', '.join(RESUME_KEYS)} may be set (start a new run to change anything else)"
                )
    cfg = load_layered(Config, stored.to_dict(), None, list(overrides), validate)
    done = int(saved["progress"]["epoch"])
    if cfg.train.epochs < done:
        raise ConfigError(f"--resume: train.epochs={cfg.train.epochs} but {run_dir} has already completed {done} epochs")
    return ResumePoint(cfg, saved)
