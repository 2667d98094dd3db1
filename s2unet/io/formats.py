"""The registry of case formats: which format reads a path, and reading through it.

Adding a format is one file with a :class:`~s2unet.io.case.CaseFormat` subclass plus one line
in :data:`FORMATS`. The rest of the toolkit never asks for a format by name: it calls
:func:`read_case` (and :meth:`~s2unet.io.case.CaseImage.write_like` to write a prediction back),
:func:`~s2unet.io.discovery.discover_cases` to find cases, and :func:`read_labels` for reference
masks (each format's :meth:`~s2unet.io.case.CaseFormat.read_seg`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .case import CaseFormat, CaseImage, Reorient
from .dicom_series import DicomSeriesFormat
from .errors import DataError
from .itk import ItkFormat
from .nifti import NiftiFormat
from .pictures import PictureFormat

PathLike = Union[str, Path]

#: Every format, asked in this order which one claims a path.
FORMATS: tuple[CaseFormat, ...] = (NiftiFormat(), ItkFormat(), DicomSeriesFormat(), PictureFormat())
#: How a model trained on data of each kind wants its inputs' intensities: volume models window
#: stored values (a CT slice PNG included), image models see 2D pictures scaled to 0..1.
_VALUES_FOR_KIND = {"volume": "stored", "image": "unit"}


def describe_formats(kind: Optional[str] = None, folders: bool = True) -> str:
    """The suffixes (and folder formats) of ``kind`` (all kinds when None), for messages.

    Args:
        kind: ``"volume"``, ``"image"`` or None.
        folders: mention the folder formats (a DICOM series) too.

    Returns:
        e.g. ``".nii.gz .nii .mha ... or a folder holding one DICOM series"``.
    """
    chosen = [f for f in FORMATS if kind is None or f.kind == kind]
    text = " ".join(s for f in chosen for s in f.suffixes)
    if folders and any(not f.suffixes for f in chosen):
        text += " or a folder holding one DICOM series"
    return text


def find_format(path: PathLike, kind: Optional[str] = None) -> Optional[CaseFormat]:
    """The format that claims ``path`` (among those of ``kind`` when given), or None.

    Args:
        path: a file or folder; hidden names (``.DS_Store``, ``._x``) are never claimed.
        kind: ``"volume"`` or ``"image"`` to consider only formats of that kind.

    Returns:
        The CaseFormat, or None.
    """
    path = Path(path)
    if path.name.startswith("."):
        return None
    return next((f for f in FORMATS if (kind is None or f.kind == kind) and f.stem(path) is not None), None)


def _claiming_format(path: PathLike) -> CaseFormat:
    """The format that claims ``path``, or an error naming the supported ones.

    Args:
        path: an existing file or folder.

    Returns:
        The CaseFormat.

    Raises:
        DataError: no format claims the path.
    """
    fmt = find_format(path)
    if fmt is None:
        raise DataError(f"{path}: unknown format; supported: {describe_formats()}")
    return fmt


def case_stem(path: PathLike, kind: str) -> Optional[str]:
    """The case id of a file (or series folder) of ``kind``, or None for paths to ignore.

    Args:
        path: a file or folder.
        kind: ``"volume"`` or ``"image"``.

    Returns:
        The name without its format's suffix, or None.
    """
    fmt = find_format(path, kind)
    return None if fmt is None else fmt.stem(Path(path))


def read_case(path: PathLike, kind: str = "volume", reorient: Reorient = True) -> CaseImage:
    """Read a case for a model trained on ``kind`` data, in whichever format it is.

    Args:
        path: a file, or a folder holding one DICOM series.
        kind: the model's data kind: ``"volume"`` reads every format with stored intensities
            (a 2D picture becomes a one-slice volume); ``"image"`` reads 2D pictures scaled to
            0..1 and refuses volumes.
        reorient: True serves volumes in the convention :data:`~s2unet.io.case.ORIENTATION`
            (an orientation name serves that one, False as stored).

    Returns:
        The CaseImage. A volume whose spacing is outside
        :data:`~s2unet.io.case.PLAUSIBLE_SPACING_MM` is read with a warning naming the file.

    Raises:
        DataError: a missing path, a format no reader claims (naming the supported ones), a
            volume for an image model, or the reader's own error.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    fmt = _claiming_format(path)
    if fmt.kind != "image" and kind == "image":
        raise DataError(f"{path} is a {fmt.name} volume, but this model was trained on 2D images "
                        f"({describe_formats('image')})")
    case = fmt.read(path, reorient, _VALUES_FOR_KIND[kind])
    if case.implausible_spacing:
        warnings.warn(f"{path}: {case.spacing_caveat}; its volumes (mL) and distances (mm) are not real ones: "
                      "check the header's spacing and units", stacklevel=2)
    return case


def read_labels(path: PathLike, reorient: Reorient, mask_threshold: float, label_map: bool) -> np.ndarray:
    """A reference (or lung) mask file's values, as the training datasets read labels.

    The format that claims the file reads it (:meth:`~s2unet.io.case.CaseFormat.read_seg`):
    volumes give their served array (voxels > 0 are foreground, or class indices); 2D pictures
    give ``read_mask(path, mask_threshold)`` (bool) or, for ``label_map``, ``read_label_map``,
    shaped (H, W) as displayed.

    Args:
        path: the label file or series folder.
        reorient: True serves volumes in the convention :data:`~s2unet.io.case.ORIENTATION`
            (an orientation name serves that one, False as stored).
        mask_threshold: the pictures' foreground threshold (fraction of the value range).
        label_map: read a picture as an integer label map (multiclass).

    Returns:
        The array.

    Raises:
        DataError: naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return _claiming_format(path).read_seg(path, reorient, mask_threshold, label_map)


#: The format kinds a model trained on each data kind segments: volume models also take 2D
#: pictures (CT slices, as one-slice volumes); image models only 2D pictures.
_INPUT_KINDS: dict[str, Optional[str]] = {"volume": None, "image": "image"}


def input_kinds(model_kind: str) -> Optional[str]:
    """The format kind a model trained on ``model_kind`` data segments (None: every format).

    Args:
        model_kind: the checkpoint's ``data.kind``.

    Returns:
        ``"image"`` or None, as :func:`find_format` takes it.
    """
    return _INPUT_KINDS[model_kind]


def describe_inputs(model_kind: str) -> str:
    """What a model trained on ``model_kind`` data segments, for messages.

    Args:
        model_kind: the checkpoint's ``data.kind``.

    Returns:
        e.g. ``"2D images (.png .jpg ...)"``.
    """
    pictures = describe_formats("image")
    if input_kinds(model_kind) == "image":
        return f"2D images ({pictures})"
    return f"volumes ({describe_formats('volume')}) or 2D CT slices ({pictures})"


def is_slice_stack(path: PathLike) -> bool:
    """True when the case at ``path`` is a volume cut into slices, False for a single 2D picture.

    The format that claims the file answers (:attr:`~s2unet.io.case.CaseFormat.planar`), so a
    new format is sliced or not by what it declares, whatever ``data.kind`` the config names.

    Args:
        path: a case's image file (or DICOM series folder).

    Returns:
        Whether its planes are slices along the data axis.

    Raises:
        DataError: no format claims the path (naming the supported ones).
    """
    return not _claiming_format(path).planar
