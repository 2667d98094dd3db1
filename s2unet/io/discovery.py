"""Finding cases: which files (or DICOM series folders) at a path are cases, and their ids.

The one place that decides it, for the training data (:mod:`s2unet.data.cases`), ``infer``
(:mod:`s2unet.inference.run`), the evaluation of prediction folders and the label app. A case id
is the name without its format's suffix (a DICOM series folder is named by the folder); in an
nnU-Net v2 image folder (``imagesTr``, ``imagesTs``) it also drops the channel suffix, so
``imagesTr/case04_0000.nii.gz`` is ``case04``, as in ``labelsTr``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .case import CaseFormat
from .errors import DataError
from .formats import find_format

PathLike = Union[str, Path]
NNUNET_IMAGE_FOLDERS = ("imagesTr", "imagesTs")


@dataclass(frozen=True)
class FoundCase:
    """One case: its id, its file (or series folder) and the format that reads it."""

    case_id: str
    path: Path
    format: CaseFormat

    @property
    def kind(self) -> str:
        """``"image"`` (a 2D picture) or ``"volume"``."""
        return self.format.kind


def case_id(path: PathLike, kind: Optional[str] = None, nnunet: bool = True) -> Optional[str]:
    """The case id of a file (or DICOM series folder), or None if no format (of ``kind``) claims it.

    Args:
        path: a file or folder.
        kind: ``"image"`` (2D pictures) or ``"volume"`` (volume formats); None for every format.
        nnunet: drop the channel suffix of files in an nnU-Net image folder.

    Returns:
        The id, or None for paths to ignore (hidden names included).

    Raises:
        DataError: an nnU-Net image without a channel suffix or of a channel other than
            ``_0000`` (s2unet reads one channel per case).
    """
    path = Path(path)
    fmt = find_format(path, kind)
    return None if fmt is None else _case_of(path, fmt, nnunet)


def _case_of(path: Path, fmt: CaseFormat, nnunet: bool) -> str:
    """:func:`case_id` of a path ``fmt`` claims."""
    stem: str = fmt.stem(path)  # type: ignore[assignment]  # claimed, so not None
    if not nnunet or path.parent.name not in NNUNET_IMAGE_FOLDERS:
        return stem
    case, sep, channel = stem.rpartition("_")
    if not (sep and case and len(channel) == 4 and channel.isdigit()):
        raise DataError(f"{path}: an nnU-Net image folder names files <case>_0000<suffix> (the channel); "
                        f"this name has no channel suffix")
    if channel != "0000":
        raise DataError(f"{path}: channel {channel}: s2unet reads one channel per case (<case>_0000); "
                        "multi-channel nnU-Net datasets are not supported")
    return case


def discover_cases(source: PathLike, kind: Optional[str] = None, *, nnunet: bool = True, as_folder: bool = False,
                   problems: Optional[list[str]] = None) -> list[FoundCase]:
    """The cases at ``source``: itself when a format claims it, else those in the folder (not recursive).

    Args:
        source: a file, a folder holding one DICOM series, or a folder of those.
        kind: consider only formats of this kind (see :func:`case_id`); None for every format.
        nnunet: name nnU-Net images by their case (see :func:`case_id`).
        as_folder: always list ``source`` as a folder (a dataset folder), even when it holds
            one DICOM series itself.
        problems: collect the problems here (``source`` missing, a bad nnU-Net name, two files
            of one id: the later file is kept) instead of raising the first.

    Returns:
        The cases, sorted by id; empty when nothing at ``source`` is a case (the caller says
        what it expected).

    Raises:
        DataError: (without ``problems``) the first problem; always, a folder that cannot be
            read as the case it claims to be (one holding several DICOM series).
    """
    source = Path(source)
    if not source.exists():
        _report(DataError(f"{source} does not exist"), problems)
        return []
    claimed = not as_folder and find_format(source, kind) is not None
    paths = [source] if claimed else sorted(source.iterdir()) if source.is_dir() else []
    found: dict[str, FoundCase] = {}
    for path in paths:
        fmt = find_format(path, kind)
        if fmt is None:
            continue
        try:
            cid = _case_of(path, fmt, nnunet)
        except DataError as exc:
            _report(exc, problems)
            continue
        if cid in found:
            _report(DataError(f"{found[cid].path} and {path} have the same case id {cid!r}; keep one per case"),
                    problems)
        found[cid] = FoundCase(cid, path, fmt)
    return [found[c] for c in sorted(found)]


def _report(exc: DataError, problems: Optional[list[str]]) -> None:
    """Raise ``exc``, or add it to ``problems`` when the caller collects them."""
    if problems is None:
        raise exc
    problems.append(str(exc))
