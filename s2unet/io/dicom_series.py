"""A DICOM CT/MR series (a folder of single-slice files) read as one volume with its geometry.

Slices are ordered by their position along the slice normal (ImagePositionPatient projected on
the cross product of the ImageOrientationPatient cosines), never by file name, and the
through-plane spacing comes from those positions (SliceThickness is not the spacing when slices
overlap or have gaps). Every slice must share the first one's size, pixel spacing and
orientation, and the gaps between positions must be equal; otherwise the error names the file
at fault. Values are modality values (Hounsfield units for CT). Predictions are written as NIfTI
with the series geometry.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .case import CaseFormat, CaseImage, scanner_image
from .errors import DataError
from .nifti import save_like
from .pictures import is_dicom_file, read_dicom_values

# Relative tolerance on pixel spacing, orientation cosines and slice gaps: rounding in the
# headers' decimal strings, not a different geometry.
_TOL = 1e-3


def _series_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (hidden files ignored), sorted by name."""
    return [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".") and is_dicom_file(p)]


def _header(path: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:
        raise DataError(f"{path}: cannot read DICOM header ({type(exc).__name__}: {exc})") from exc


def _floats(ds: Any, key: str, n: int, path: Path) -> np.ndarray:
    value = getattr(ds, key, None)
    if value is None or len(value) != n:
        raise DataError(f"{path}: DICOM {key} is missing; a series needs it to place the slice")
    return np.asarray([float(v) for v in value], dtype=np.float64)


def _rounded(values: np.ndarray) -> tuple[float, ...]:
    """Header numbers compared up to the decimal rounding of DICOM strings."""
    return tuple(float(v) for v in np.round(values, 3))


def _odd_one_out(folder: Path, values: list[tuple[Path, Any]], what: str) -> Any:
    """The value most slices share; raise naming the first file that differs from it.

    Args:
        folder: the series folder (named in the message).
        values: (file, value) per slice.
        what: the property, for the message.

    Returns:
        The shared value.

    Raises:
        DataError: a slice differs (mixed series, or a stray file in the folder).
    """
    common, count = Counter(v for _, v in values).most_common(1)[0]
    for file, value in values:
        if value != common:
            raise DataError(f"{file}: {what} {list(value)} differs from {list(common)} of the other {count} "
                            f"slice(s) of the series in {folder}; one series must have one {what}")
    return common


class DicomSeriesFormat(CaseFormat):
    """A folder holding the slices of one DICOM series (two or more files, one SeriesInstanceUID)."""

    name = "dicom-series"
    suffixes = ()
    kind = "volume"
    output_suffix = ".nii.gz"

    def stem(self, path: Path) -> Optional[str]:
        """The folder name when ``path`` is a folder of slices of one series, else None.

        Only the first two files' headers are read here; :meth:`read` checks every slice.
        """
        if not path.is_dir() or path.name.startswith("."):
            return None
        files = _series_files(path)
        if len(files) < 2:
            return None
        heads = [_header(p) for p in files[:2]]
        uids = {str(getattr(h, "SeriesInstanceUID", "")) for h in heads}
        placed = all(getattr(h, "ImagePositionPatient", None) is not None for h in heads)
        return path.name if placed and len(uids) == 1 and "" not in uids else None

    def read(self, path: Path, reorient: bool, values: str) -> CaseImage:
        """See :meth:`CaseFormat.read`: the whole series, modality values as float32."""
        files = _series_files(path)
        if len(files) < 2:
            raise DataError(f"{path}: a DICOM series folder needs at least two slice files, found {len(files)}")
        slices = []
        for file in files:
            ds, pixels = read_dicom_values(file)
            orientation = _floats(ds, "ImageOrientationPatient", 6, file)
            slices.append((file, pixels, _floats(ds, "ImagePositionPatient", 3, file), orientation,
                           _floats(ds, "PixelSpacing", 2, file)))
        _odd_one_out(path, [(file, pixels.shape) for file, pixels, _, _, _ in slices], "slice size")
        orient0 = np.asarray(_odd_one_out(path, [(file, _rounded(o)) for file, _, _, o, _ in slices],
                                          "ImageOrientationPatient"))
        spacing0 = np.asarray(_odd_one_out(path, [(file, _rounded(s)) for file, _, _, _, s in slices], "pixel spacing"))
        row_cos, col_cos = orient0[:3], orient0[3:]
        normal = np.cross(row_cos, col_cos)
        slices.sort(key=lambda s: float(s[2] @ normal))
        depth = np.array([float(s[2] @ normal) for s in slices])
        gaps = np.diff(depth)
        step = float(np.median(gaps))
        if step <= 0 or not np.allclose(gaps, step, rtol=_TOL, atol=_TOL):
            bad = int(np.argmax(np.abs(gaps - step))) + 1
            raise DataError(f"{slices[bad][0]}: slice gap {gaps[bad - 1]:.4g} mm differs from the series' {step:.4g} mm "
                            f"(duplicate or missing slice, or mixed spacing) in {path}")
        # NIfTI layout: axis 0 = column, axis 1 = row, axis 2 = slice (in position order).
        volume = np.ascontiguousarray(np.stack([s[1].T for s in slices], axis=-1).astype(np.float32))
        lps = np.eye(4)
        lps[:3, 0] = row_cos * spacing0[1]  # along a row: column index, PixelSpacing[1]
        lps[:3, 1] = col_cos * spacing0[0]  # down a column: row index, PixelSpacing[0]
        lps[:3, 2] = (slices[-1][2] - slices[0][2]) / (len(slices) - 1)
        lps[:3, 3] = slices[0][2]
        return CaseImage(path, scanner_image(volume, lps), reorient, self, values)

    def write(self, array: np.ndarray, like: CaseImage, path: Path, dtype: Any, binary: bool = False) -> Path:
        """See :meth:`CaseFormat.write`: NIfTI with the series geometry (:func:`save_like`)."""
        return save_like(array, like, path, dtype)
