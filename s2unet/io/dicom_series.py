"""A DICOM CT/MR series (a folder of single-slice files) read as one volume with its geometry.

Files are grouped by SeriesInstanceUID with GDCM (SimpleITK's series reader). A folder is one
case only when all its DICOM files form one series: a folder that mixes a series with files of
other series (a second series, a localizer) is refused with the series listed, never merged
into one volume nor read file by file. A folder where every file is a series of its own (2D
DICOM pictures, e.g. X-rays) is not a series folder; its files are pictures.

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
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .case import CaseFormat, CaseImage, scanner_image
from .dicom_seg import SOURCES_KEY
from .errors import DataError
from .nifti import save_like
from .pictures import is_dicom_file, read_dicom_values

# Relative tolerance on pixel spacing, orientation cosines and slice gaps: rounding in the
# headers' decimal strings, not a different geometry.
_TOL = 1e-3


def _series_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (hidden files ignored), sorted by name."""
    return [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".") and is_dicom_file(p)]


#: Series listed by name in the message refusing a mixed folder.
_LISTED = 4


@lru_cache(maxsize=32)
def _gdcm_series(folder: str, state: tuple[tuple[str, int, int], ...]) -> tuple[tuple[str, tuple[Path, ...]], ...]:
    """GDCM's grouping of the folder's files: (SeriesInstanceUID, files sorted by name) per series.

    Cached per folder ``state`` (name, mtime, size of each DICOM file), as a folder is looked at
    by discovery and again by the reader.
    """
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "No Series were found" is an answer here
    try:
        groups = []
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder):
            files = [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid)]
            files = sorted(f for f in files if not f.name.startswith("."))
            if files:
                groups.append((uid, tuple(files)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    return tuple(groups)


def _describe(uid: str, files: tuple[Path, ...]) -> str:
    number = getattr(_header(files[0]), "SeriesNumber", None)
    numbered = f" (series number {number})" if number not in (None, "") else ""
    return f"{uid}{numbered}: {len(files)} file(s) from {files[0].name}"


def _one_series(folder: Path) -> Optional[list[Path]]:
    """The files of the one series of slices in ``folder``; None if it holds no series of slices.

    A series of slices has two or more files, the first with an ImagePositionPatient.

    Raises:
        DataError: the folder holds such a series and also files of other series, or DICOM
            files GDCM places in no series (no SeriesInstanceUID, unreadable header).
    """
    files = _series_files(folder)
    if len(files) < 2:
        return None
    state = tuple((f.name, (st := f.stat()).st_mtime_ns, st.st_size) for f in files)
    series = _gdcm_series(str(folder), state)
    placed = [files for _, files in series
              if len(files) >= 2 and getattr(_header(files[0]), "ImagePositionPatient", None) is not None]
    if not placed:
        return None
    if len(series) > 1:
        listed = "; ".join(_describe(uid, files) for uid, files in series[:_LISTED])
        more = f"; and {len(series) - _LISTED} more" if len(series) > _LISTED else ""
        raise DataError(f"{folder}: holds {len(series)} DICOM series ({listed}{more}); a series folder must hold "
                        "one series: move each series into a folder of its own")
    grouped = set(placed[0])
    stray = [f for f in files if f not in grouped]
    if stray:
        raise DataError(f"{stray[0]}: DICOM file in no series (no SeriesInstanceUID or an unreadable header) among "
                        f"the {len(grouped)} slices of the series in {folder}; remove it")
    return list(placed[0])


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

        Raises:
            DataError: a folder mixing series (see :func:`_one_series`).
        """
        if not path.is_dir() or path.name.startswith("."):
            return None
        return path.name if _one_series(path) is not None else None

    def read(self, path: Path, reorient: bool, values: str) -> CaseImage:
        """See :meth:`CaseFormat.read`: the whole series, modality values as float32."""
        files = _one_series(path)
        if files is None:
            raise DataError(f"{path}: no DICOM series of two or more placed slices (ImagePositionPatient) here")
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
        # The files in slice order: a DICOM-SEG references each slice's own SOP instance.
        return CaseImage(path, scanner_image(volume, lps), reorient, self, values,
                         extra={SOURCES_KEY: [s[0] for s in slices]})

    def placeholder_spacing(self, case: CaseImage) -> bool:
        """False: the spacing comes from PixelSpacing and the slice positions, even when 1 mm."""
        return False

    def write(self, array: np.ndarray, like: CaseImage, path: Path, dtype: Any, binary: bool = False) -> Path:
        """See :meth:`CaseFormat.write`: NIfTI with the series geometry (:func:`save_like`)."""
        return save_like(array, like, path, dtype)
