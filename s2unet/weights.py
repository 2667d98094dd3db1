"""Pretrained checkpoints: where to find them on disk, integrity checks, the one error type and
the one strict state-dict loader (:func:`load_state_strictly`).

What each checkpoint is (file name, sha256, URL) is part of its encoder's registry entry
(``s2unet.models.encoders``), which declares it here (:func:`declare_checkpoint`): this module
sits below models and imports none of it. Files are looked up, in this order, in each folder of
``$S2UNET_WEIGHTS``, in the checkout's ``weights/`` folder, and in ``$S2UNET_SHARED/weights``
(``shared/weights`` beside the checkout when ``$S2UNET_SHARED`` is not set); a missing file's
error names every one of these folders. Nothing here downloads: a missing checkpoint is an error that says where to get the file and
where to put it, and an encoder is never silently left with random weights.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Protocol

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_ENV = "S2UNET_WEIGHTS"
SHARED_ENV = "S2UNET_SHARED"


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, corrupt, or does not fit the model it is loaded into."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint file is not on disk; the message says where to download it and put it."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One published checkpoint.

    Attributes:
        key: its manifest key (``model.weights`` and ``resolve_checkpoint`` accept it).
        filename: the file name as published, which is also the name looked up on disk.
        sha256: the published hex digest, or None where none is published.
        url: where to download it.
        description: what the file holds.
        licence: the licence it is published under.
    """

    key: str
    filename: str
    sha256: str | None
    url: str
    description: str
    licence: str


class HasCheckpoint(Protocol):
    """What is asked of an encoder's registry entry (``EncoderSpec``) here: its name and file."""

    name: str
    checkpoint: Optional[CheckpointInfo]


# Encoder name -> its published checkpoint, declared by the encoder registry on registration.
_MANIFEST: dict[str, CheckpointInfo] = {}


def declare_checkpoint(encoder: str, info: CheckpointInfo) -> None:
    """Add a registered encoder's published checkpoint to the manifest (``register_encoder`` does)."""
    _MANIFEST[encoder] = info


def known_checkpoints() -> dict[str, CheckpointInfo]:
    """The published checkpoints of the registered encoders, by manifest key.

    The encoder registry (``s2unet.models.encoders``) is their one source: each entry holds its
    checkpoint's file name, sha256 and URL next to its architecture and normalisation.

    Returns:
        ``{key: CheckpointInfo}``, e.g. ``"sam2.1_hiera_tiny"``, ``"mobile_sam"``.
    """
    return {_MANIFEST[name].key: _MANIFEST[name] for name in sorted(_MANIFEST)}


def weights_search_path() -> list[tuple[Path, str]]:
    """Every folder searched for checkpoints, in order, with where it comes from.

    The order: each folder of ``$S2UNET_WEIGHTS`` (``os.pathsep``-separated); the checkout's
    ``weights/`` folder; the ``weights/`` folder of the shared data folder, which is
    ``$S2UNET_SHARED`` when set, else ``shared/`` beside the checkout.

    Returns:
        ``(folder, origin)`` pairs, whether or not the folder exists.
    """
    env = os.environ.get(WEIGHTS_ENV, "")
    folders = [(Path(p).expanduser(), f"${WEIGHTS_ENV}") for p in env.split(os.pathsep) if p]
    folders.append((REPO_ROOT / "weights", "the checkout's weights folder"))
    shared = os.environ.get(SHARED_ENV)
    if shared:
        folders.append((Path(shared).expanduser() / "weights", f"${SHARED_ENV}/weights"))
    else:
        folders.append((REPO_ROOT.parent / "shared" / "weights", f"beside the checkout; ${SHARED_ENV} moves it"))
    return folders


def _manifest_entry(key_or_name: str) -> CheckpointInfo | None:
    """The manifest entry with this key or this file name, if any."""
    known = known_checkpoints()
    if key_or_name in known:
        return known[key_or_name]
    return next((info for info in known.values() if info.filename == key_or_name), None)


def _how_to_get(info: CheckpointInfo) -> str:
    """Where to download a known checkpoint and where to put it."""
    return (
        f"Download {info.filename} ({info.description}; {info.licence}) from {info.url} "
        f"and put it in {REPO_ROOT / 'weights'}, or in a folder listed in ${WEIGHTS_ENV} "
        f"({os.pathsep!r}-separated)."
    )


def _locate(key_or_path: str) -> tuple[Path, CheckpointInfo | None]:
    """Find a checkpoint on disk.

    Args:
        key_or_path: an existing file, a manifest key, or a manifest file name.

    Returns:
        The file, and its manifest entry when it was found through the manifest (an explicit path
        may be a user's own fine-tuned file, so it is not tied to a published digest).

    Raises:
        CheckpointNotFoundError: the file is not there.
    """
    given = Path(key_or_path).expanduser()
    if given.is_file():
        return given, None
    info = _manifest_entry(key_or_path)
    if info is None or given.parent != Path("."):
        known_name = _manifest_entry(given.name)
        known = ", ".join(known_checkpoints())
        hint = _how_to_get(known_name) if known_name else f"Known checkpoints: {known}."
        raise CheckpointNotFoundError(
            f"checkpoint {key_or_path!r} is neither an existing file nor a known checkpoint. {hint}"
        )
    searched = weights_search_path()
    for folder, _ in searched:
        candidate = folder / info.filename
        if candidate.is_file():
            return candidate, info
    where = "; ".join(f"{folder} ({origin}{'' if folder.is_dir() else ', missing'})" for folder, origin in searched)
    raise CheckpointNotFoundError(
        f"checkpoint {info.filename} not found; looked in: {where}. {_how_to_get(info)}"
    )


def resolve_checkpoint(key_or_path: str) -> Path:
    """Turn a path, a manifest key or a manifest file name into an existing checkpoint file.

    Args:
        key_or_path: an existing file, a key of :func:`known_checkpoints` (e.g. ``"sam2.1_hiera_tiny"``)
            or a manifest file name (e.g. ``"sam2.1_hiera_tiny.pt"``), looked up in the folders
            of :func:`weights_search_path`.

    Returns:
        The checkpoint file.

    Raises:
        CheckpointNotFoundError: the file is not there; the message names the download URL.
    """
    return _locate(key_or_path)[0]


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256_of(path: Path) -> str:
    """Hex digest of a file, hashed once per (path, size, mtime) in this process."""
    stat = path.stat()
    cache_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SHA256_CACHE[cache_key] = digest.hexdigest()
    return _SHA256_CACHE[cache_key]


def verify_sha256(path: Path, expected: str) -> None:
    """Check a file against its published digest.

    Args:
        path: the file.
        expected: the hex sha256 it must have.

    Raises:
        CheckpointError: the digests differ (a partial download or another file under that name).
    """
    actual = _sha256_of(path)
    if actual != expected.lower():
        raise CheckpointError(
            f"{path} has sha256 {actual} but {expected.lower()} was expected: the download is "
            "incomplete or this is another file under that name; download it again"
        )


def load_checkpoint_file(path: Path) -> dict:
    """Read a checkpoint with torch's safe (weights-only) unpickler onto the CPU.

    Args:
        path: the checkpoint file.

    Returns:
        The dict it holds.

    Raises:
        CheckpointError: the file is truncated, corrupt, not a torch file, or not a dict.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for damaged files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({type(err).__name__}: {first_line}); "
            "it may be truncated or corrupt: download it again"
        ) from err
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a dict of tensors")
    return loaded


def _format_shape(shape: torch.Size) -> str:
    return "(" + ",".join(str(n) for n in shape) + ")"


def _examples(keys: list[str], limit: int = 3) -> str:
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")


def load_state_strictly(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, target: str,
                        expected: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Load tensors only when they fit exactly: the same keys and shapes, else one readable error.

    Args:
        module: what they are loaded into.
        state: the tensors, named as in ``module.state_dict()``.
        source: the file they came from, for the message.
        target: what ``module`` is, for the message.
        expected: the tensors ``state`` must match (``module.state_dict()`` by default); a
            part of it when the others are loaded elsewhere or not saved, left as they are.

    Raises:
        CheckpointError: naming the first few mismatched, unexpected and missing keys.
    """
    expected = module.state_dict() if expected is None else expected
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    unexpected = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    problems = [
        f"{k} has shape {_format_shape(state[k].shape)} in the file but "
        f"{_format_shape(expected[k].shape)} in the model"
        for k in mismatched[:3]
    ]
    if len(mismatched) > 3:
        problems.append(f"{len(mismatched) - 3} more tensors differ in shape")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys such as {_examples(unexpected)}")
    if missing:
        problems.append(f"{len(missing)} missing keys such as {_examples(missing)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {target}: " + "; ".join(problems))
    module.load_state_dict(state, strict=False)  # the check above is the strict one; the rest stays


def _encoders_at_hand_hint() -> str:
    """What runs offline: the ``--set`` of every encoder whose default checkpoint is on disk."""
    at_hand = []
    for name, info in sorted(_MANIFEST.items()):
        try:
            found, _ = _locate(info.key)
        except CheckpointNotFoundError:
            continue
        at_hand.append(f"--set model.encoder={name} ({found})")
    if not at_hand:
        return ""
    return " With the weights at hand, run with " + " or ".join(at_hand) + "."


def locate_default_checkpoint(spec: HasCheckpoint) -> tuple[Path, CheckpointInfo | None]:
    """The file of an encoder's published checkpoint.

    Raises:
        CheckpointError: the encoder has none.
        CheckpointNotFoundError: not on disk; the message adds the ``--set model.encoder=...`` of
            the encoders whose checkpoints are, so an offline user has a command that runs.
    """
    if spec.checkpoint is None:
        raise CheckpointError(f"encoder {spec.name!r} has no default checkpoint; set model.weights to a file or random")
    try:
        return _locate(spec.checkpoint.key)
    except CheckpointNotFoundError as err:
        raise CheckpointNotFoundError(f"{err}{_encoders_at_hand_hint()}") from None


def read_encoder_checkpoint(spec: HasCheckpoint, weights: str) -> tuple[Path, dict]:
    """Find, verify and read the checkpoint an encoder's weights come from, once.

    Args:
        spec: the encoder's registry entry (name and default checkpoint).
        weights: ``"default"`` for ``spec.checkpoint``, a manifest key, or a checkpoint path.

    Returns:
        The file and what it holds.

    Raises:
        CheckpointNotFoundError: the file is not on disk.
        CheckpointError: digest mismatch or unreadable file.
    """
    if weights == "default":
        path, info = locate_default_checkpoint(spec)
    else:
        path, info = _locate(weights)
    if info is not None and info.sha256 is not None:
        verify_sha256(path, info.sha256)
    return path, load_checkpoint_file(path)
