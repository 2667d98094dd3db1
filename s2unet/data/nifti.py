"""NIfTI volumes that remember their geometry, so predictions are written back where they belong.

A :class:`NiftiVolume` keeps nibabel's lazy proxy (nothing is decoded at load time) and, when
asked to reorient, serves arrays in the closest canonical RAS orientation: axis 0 runs towards
the patient's Right, axis 1 Anterior, axis 2 Superior. Models then see every scanner's data the
same way round. :func:`save_like` undoes that reorientation and writes with the reference's
original affine, shape, zooms and qform/sform codes, so the output overlays the input in any
viewer.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from .errors import DataError

PathLike = Union[str, Path]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
_RAS = axcodes2ornt(("R", "A", "S"))
_IDENTITY_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


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


def _as_float32_if_float(arr: np.ndarray) -> np.ndarray:
    # Scaled NIfTI data comes back as float64; float32 halves the cache and is exact enough
    # for intensities that are then windowed to 0..1.
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


class NiftiVolume:
    """A NIfTI file opened lazily, served in its original or in the closest RAS orientation.

    Attributes:
        path: the file.
        image: the nibabel image (its ``dataobj`` is a lazy proxy in the ORIGINAL orientation).
        reoriented: whether arrays are served in closest-RAS orientation.
        ornt: nibabel orientation taking original array axes to served axes (identity when not
            reorienting).
    """

    def __init__(self, path: Path, image: nib.spatialimages.SpatialImage, reorient: bool) -> None:
        self.path = Path(path)
        self.image = image
        if len(image.shape) != 3:
            raise DataError(f"{self.path}: expected a 3D volume, got shape {tuple(image.shape)}")
        self.reoriented = bool(reorient)
        if reorient:
            # io_orientation picks, for each array axis, the world axis it is closest to (so an
            # oblique acquisition is served in the nearest RAS-aligned order, never resampled).
            self.ornt = ornt_transform(io_orientation(image.affine), _RAS)
        else:
            self.ornt = _IDENTITY_ORNT.copy()
        self._inverse = ornt_transform(_RAS, io_orientation(image.affine)) if reorient else _IDENTITY_ORNT

    # --------------------------------------------------------------------------- geometry
    @property
    def dataobj(self):
        """The lazy nibabel array proxy, in the original on-disk orientation."""
        return self.image.dataobj

    @property
    def header(self):
        """The original nibabel header."""
        return self.image.header

    @property
    def original_shape(self) -> tuple[int, ...]:
        """Array shape on disk."""
        return tuple(int(s) for s in self.image.shape)

    @property
    def original_affine(self) -> np.ndarray:
        """Voxel-to-world affine on disk."""
        return np.asarray(self.image.affine, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the served arrays."""
        out = [0, 0, 0]
        for i, (axis, _) in enumerate(self.ornt):
            out[int(axis)] = self.original_shape[i]
        return tuple(out)  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-world affine of the served arrays (equals the original one if not reoriented)."""
        return self.original_affine @ inv_ornt_aff(self.ornt, self.original_shape)

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel spacing (mm) along the served axes."""
        orig = self.header.get_zooms()[:3]
        out = [0.0, 0.0, 0.0]
        for i, (axis, _) in enumerate(self.ornt):
            out[int(axis)] = float(orig[i])
        return tuple(out)  # type: ignore[return-value]

    @property
    def axcodes(self) -> tuple[str, ...]:
        """Orientation codes of the served axes, e.g. ('R', 'A', 'S')."""
        return nib.aff2axcodes(self.affine)

    @property
    def original_axcodes(self) -> tuple[str, ...]:
        """Orientation codes of the array on disk."""
        return nib.aff2axcodes(self.original_affine)

    @property
    def dtype(self) -> np.dtype:
        """dtype of decoded arrays: the stored type, or float32 when the file is scaled."""
        return _decoded_dtype(self)

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded array (what a cache must budget for)."""
        return int(np.prod(self.original_shape)) * self.dtype.itemsize

    # ------------------------------------------------------------------------------- data
    def to_served(self, array: np.ndarray) -> np.ndarray:
        """Reorient an array from the on-disk orientation to the served one."""
        return array if not self.reoriented else apply_orientation(array, self.ornt)

    def to_original(self, array: np.ndarray) -> np.ndarray:
        """Reorient an array from the served orientation back to the on-disk one."""
        return array if not self.reoriented else apply_orientation(array, self._inverse)

    def get_array(self) -> np.ndarray:
        """Decode the whole volume in the served orientation.

        Returns:
            The array in its stored dtype when the file is unscaled (uint8 stays uint8),
            else float32 with scl_slope/scl_inter applied.

        Raises:
            DataError: the data cannot be decoded (truncated or corrupt file).
        """
        try:
            arr = np.asanyarray(self.image.dataobj)
        except Exception as exc:
            raise DataError(f"{self.path}: cannot decode the volume ({type(exc).__name__}: {exc})") from exc
        return np.ascontiguousarray(self.to_served(_as_float32_if_float(np.asarray(arr))))

    def get_slice(self, k: int, axis: int = 2) -> np.ndarray:
        """Read one served slice through the lazy proxy.

        Cheap for uncompressed ``.nii``; for ``.nii.gz`` the proxy decompresses up to the slice
        on every call, so repeated access should go through a decoded array instead.

        Args:
            k: slice index along ``axis`` of the served array.
            axis: served axis (0, 1 or 2).

        Returns:
            2D array with the two other served axes in order.
        """
        n = self.shape[axis]
        if not 0 <= k < n:
            raise IndexError(f"{self.path}: slice {k} outside 0..{n - 1} along axis {axis}")
        orig_axis = int(np.flatnonzero(self.ornt[:, 0] == axis)[0])
        flip = self.ornt[orig_axis, 1] < 0
        orig_k = self.original_shape[orig_axis] - 1 - k if flip else k
        index = [slice(None)] * 3
        index[orig_axis] = slice(orig_k, orig_k + 1)  # keep the axis so the 3D ornt still applies
        try:
            slab = np.asarray(self.image.dataobj[tuple(index)])
        except Exception as exc:
            raise DataError(f"{self.path}: cannot decode slice {k} ({type(exc).__name__}: {exc})") from exc
        return np.take(self.to_served(_as_float32_if_float(slab)), 0, axis=axis)

    def __repr__(self) -> str:
        return f"NiftiVolume({str(self.path)!r}, shape={self.shape}, axcodes={self.axcodes})"


def _decoded_dtype(vol: NiftiVolume) -> np.dtype:
    proxy = vol.image.dataobj
    slope = getattr(proxy, "slope", 1.0)
    inter = getattr(proxy, "inter", 0.0)
    if slope == 1.0 and inter == 0.0:
        return np.dtype(vol.image.get_data_dtype())
    return np.dtype(np.float32)


def load_nifti(path: PathLike, reorient: bool = True) -> NiftiVolume:
    """Open a NIfTI file lazily (the header is read, the data is not).

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        reorient: serve arrays in the closest RAS orientation.

    Returns:
        The NiftiVolume.

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
    return NiftiVolume(path, image, reorient)


def check_same_geometry(a: NiftiVolume, b: NiftiVolume, atol: float = 1e-3) -> None:
    """Raise unless two volumes share shape and affine (on disk).

    Args:
        a: e.g. the image volume.
        b: e.g. its label volume.
        atol: absolute tolerance on affine entries (mm).

    Raises:
        DataError: naming both files and the mismatch.
    """
    if a.original_shape != b.original_shape:
        raise DataError(f"{a.path} has shape {a.original_shape} but {b.path} has shape {b.original_shape}")
    if not np.allclose(a.original_affine, b.original_affine, rtol=0.0, atol=atol):
        diff = float(np.max(np.abs(a.original_affine - b.original_affine)))
        raise DataError(
            f"{a.path} and {b.path} have different affines (max difference {diff:.4g} > {atol}):\n"
            f"{np.array2string(a.original_affine, precision=4)}\nvs\n{np.array2string(b.original_affine, precision=4)}"
        )


def _tmp_name(path: Path) -> Path:
    stem = nifti_stem(path)
    if stem is None:
        raise DataError(f"{path}: output name must end with .nii or .nii.gz")
    # Keep the real suffix last so nibabel still picks gzip (or not) for the temporary file.
    return path.with_name(stem + ".tmp" + path.name[len(stem):])


def save_like(
    array: np.ndarray,
    reference: NiftiVolume,
    path: PathLike,
    dtype: Union[np.dtype, type, str, None] = None,
) -> Path:
    """Write an array given in the reference's served orientation with its original geometry.

    The array is reoriented back to the reference's on-disk orientation and written with a copy
    of its header (affine, shape, zooms, qform/sform and their codes, units), only the data type
    changed. The write is atomic: ``<name>.tmp.nii[.gz]`` then ``os.replace``, so an interrupted
    run never leaves a half-written file under the final name.

    Args:
        array: data with shape ``reference.shape`` (served orientation).
        reference: the volume the array was computed from.
        path: output ``.nii`` / ``.nii.gz`` path (parent folders are created).
        dtype: on-disk type, e.g. np.uint8 for masks; None keeps ``array.dtype``.

    Returns:
        The written path.

    Raises:
        DataError: shape mismatch, or float values that an integer dtype cannot hold exactly.
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if tuple(arr.shape) != tuple(reference.shape):
        raise DataError(
            f"{path}: array shape {tuple(arr.shape)} does not match {reference.path} (served shape {reference.shape})"
        )
    out_dtype = np.dtype(dtype) if dtype is not None else arr.dtype
    if np.issubdtype(out_dtype, np.integer):
        cast = arr.astype(out_dtype)
        # An integer file cannot hold probabilities; refuse rather than silently truncate
        # (nibabel would instead rescale with scl_slope, which most viewers show as-is).
        if not np.array_equal(cast, arr):
            raise DataError(f"{path}: values do not fit {out_dtype} exactly; threshold/round before saving")
        arr = cast
    else:
        arr = arr.astype(out_dtype)
    data = np.ascontiguousarray(reference.to_original(arr))

    header = reference.header.copy()
    header.set_data_dtype(out_dtype)
    # The reference's scaling describes its own data, not ours; let nibabel decide on write.
    header.set_slope_inter(np.nan, np.nan)
    image = type(reference.image)(data, reference.original_affine, header)
    # The affine passed equals the header's best affine, so nibabel keeps the header's q/s
    # forms untouched; the codes are set again explicitly so no nibabel default can leak in.
    for key in ("qform_code", "sform_code"):
        image.header[key] = reference.header[key]

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        nib.save(image, str(tmp))
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{path}: cannot write NIfTI ({type(exc).__name__}: {exc})") from exc
    return path
