"""NIfTI files (nibabel): read lazily with their geometry, predictions written back like them.

:func:`save_like` undoes the served reorientation and writes with the reference's original
affine, shape, zooms and qform/sform codes, so the output overlays the input in any viewer. It
also writes the NIfTI output of formats without a writer of their own (a DICOM series).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import nibabel as nib
import numpy as np

from .atomic import atomic_path
from .case import CaseFormat, CaseImage, Reorient, check_integer_fit
from .errors import DataError

PathLike = Union[str, Path]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


def nifti_stem(path: PathLike) -> Optional[str]:
    """The file name without ``.nii.gz`` / ``.nii`` (case-insensitive), or None if neither.

    Args:
        path: a file path.

    Returns:
        The stem, or None for a non-NIfTI name.
    """
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def load_nifti(path: PathLike, reorient: Reorient = True) -> CaseImage:
    """Open a NIfTI file lazily (the header is read, the data is not).

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        reorient: True serves arrays in the convention :data:`~s2unet.io.case.ORIENTATION`
            (an orientation name serves that one, False as stored).

    Returns:
        The CaseImage.

    Raises:
        DataError: missing file, not a NIfTI file, or not 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        image = nib.load(str(path))
    except Exception as exc:
        raise DataError(f"{path}: cannot read NIfTI header ({type(exc).__name__}: {exc})") from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image, nib.Nifti1Pair)):
        raise DataError(f"{path}: not a NIfTI image ({type(image).__name__})")
    if len(image.shape) > 3 and all(s == 1 for s in image.shape[3:]):
        # Some tools write (X, Y, Z, 1); drop the empty axis (nibabel decodes such files here).
        image = nib.funcs.squeeze_image(image)
    return CaseImage(path, image, reorient, NiftiFormat())


def save_like(
    array: np.ndarray,
    reference: CaseImage,
    path: PathLike,
    dtype: Union[np.dtype, type, str, None] = None,
) -> Path:
    """Write an array given in the reference's served orientation as NIfTI with its geometry.

    The array is reoriented back to the reference's on-disk orientation and written with a copy
    of its header (affine, shape, zooms, qform/sform and their codes, units), only the data type
    changed. The write is atomic (:func:`~s2unet.io.atomic.atomic_path`), so an interrupted
    run never leaves a half-written file under the final name.

    Args:
        array: data with shape ``reference.shape`` (served orientation).
        reference: the volume the array was computed from.
        path: output ``.nii`` / ``.nii.gz`` path (parent folders are created).
        dtype: on-disk type, e.g. np.uint8 for masks; None keeps ``array.dtype``.

    Returns:
        The written path.

    Raises:
        DataError: a name without a NIfTI suffix, shape mismatch, or float values that an
            integer dtype cannot hold exactly.
    """
    path = Path(path)
    if nifti_stem(path) is None:
        raise DataError(f"{path}: output name must end with .nii or .nii.gz")
    arr = np.asarray(array)
    arr = arr.astype(np.uint8) if arr.dtype == np.bool_ else arr
    if tuple(arr.shape) != tuple(reference.shape):
        raise DataError(
            f"{path}: array shape {tuple(arr.shape)} does not match {reference.path} (served shape {reference.shape})"
        )
    arr = check_integer_fit(arr, dtype if dtype is not None else arr.dtype, path)
    data = np.ascontiguousarray(reference.to_original(arr))

    header = reference.header.copy()
    header.set_data_dtype(arr.dtype)
    # The reference's scaling describes its own data, not ours; let nibabel decide on write.
    header.set_slope_inter(np.nan, np.nan)
    image = type(reference.image)(data, reference.original_affine, header)
    # The affine passed equals the header's best affine, so nibabel keeps the header's q/s
    # forms untouched; the codes are set again explicitly so no nibabel default can leak in.
    for key in ("qform_code", "sform_code"):
        image.header[key] = reference.header[key]
    try:
        with atomic_path(path) as tmp:  # the temporary name keeps .nii(.gz) last: gzip is kept
            nib.save(image, str(tmp))
    except Exception as exc:
        raise DataError(f"{path}: cannot write NIfTI ({type(exc).__name__}: {exc})") from exc
    return path


class NiftiFormat(CaseFormat):
    """``.nii`` / ``.nii.gz`` volumes; predictions are NIfTI with the source's header."""

    name = "nifti"
    suffixes = NIFTI_SUFFIXES
    kind = "volume"
    output_suffix = ".nii.gz"

    def read(self, path: Path, reorient: Reorient, values: str) -> CaseImage:
        """See :meth:`CaseFormat.read`; NIfTI intensities are always served as stored."""
        return load_nifti(path, reorient)

    def write(self, array: np.ndarray, like: CaseImage, path: Path, dtype: Any, binary: bool = False) -> Path:
        """See :meth:`CaseFormat.write` (:func:`save_like`)."""
        return save_like(array, like, path, dtype)
