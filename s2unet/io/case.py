"""The one result every reader returns, and the interface every file format implements.

A :class:`CaseImage` is a volume that remembers its geometry, so a prediction can be written back
where it belongs. It keeps a nibabel image (for NIfTI files nibabel's lazy proxy: nothing is
decoded at load time; other formats are converted to an in-memory NIfTI image with the same
geometry) and, when asked to reorient, serves arrays in the orientation of the convention
:data:`ORIENTATION`, so models, overlays and the label app see every scanner's data the same way
round.

The convention (``radiological-v1``): a slice ``k`` along served axis ``a`` is shown as the
picture ``np.take(array, k, a).T`` (rows top to bottom), and that picture is what a radiologist
sees in 3D Slicer or ITK-SNAP. Served arrays are in the closest L-P-I orientation (never
resampled): axis 0 runs towards the patient's Left, axis 1 Posterior, axis 2 Inferior. So

- axial (axis 2): anterior at the top, the patient's right on the image's left;
- coronal (axis 1): superior at the top, the patient's right on the image's left;
- sagittal (axis 0): superior at the top, anterior on the image's left;

and slice indices count from the patient's right (axis 0), from the front (axis 1) and from the
head down (axis 2). Files without geometry (2D pictures) are taken as already displayed: a
picture is a one-slice volume whose slice ``0`` is ``array[:, :, 0].T``, never reoriented.
:data:`LEGACY_ORIENTATION` (closest R-A-S, which shows a scan anterior-down and mirrored) is
what s2unet served before the convention; it is kept only to run checkpoints trained with it.

A :class:`CaseFormat` reads one kind of file (or folder) into a CaseImage and writes a prediction
back next to it; :mod:`s2unet.io.formats` holds the registry of formats.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from .errors import DataError

PathLike = Union[str, Path]

#: Voxel spacing (mm) a real scan can have: finer is below any scanner's resolution, coarser is
#: no longer an image of a body (a header in metres or microns, or a corrupt one).
PLAUSIBLE_SPACING_MM = (0.01, 50.0)

#: The orientation convention of served arrays (recorded in checkpoints and labelled_slices.json).
ORIENTATION = "radiological-v1"
#: What s2unet served before :data:`ORIENTATION` existed (closest RAS), for older checkpoints.
LEGACY_ORIENTATION = "ras-v0"
#: Served axis codes of each orientation a CaseImage can serve.
SERVED_AXCODES: dict[str, tuple[str, str, str]] = {ORIENTATION: ("L", "P", "I"), LEGACY_ORIENTATION: ("R", "A", "S")}
#: ``reorient`` as the readers take it: False keeps the stored order, True serves
#: :data:`ORIENTATION`, an orientation name serves that one.
Reorient = Union[bool, str]
_IDENTITY_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def served_orientation(reorient: Reorient) -> Optional[str]:
    """The orientation name ``reorient`` asks for, or None for the stored order.

    Raises:
        ValueError: an unknown orientation name.
    """
    if reorient is None or isinstance(reorient, (bool, np.bool_)):
        return ORIENTATION if reorient else None
    if reorient not in SERVED_AXCODES:
        raise ValueError(f"unknown orientation {reorient!r}; known: {sorted(SERVED_AXCODES)}")
    return str(reorient)


def _as_float32_if_float(arr: np.ndarray) -> np.ndarray:
    # Scaled NIfTI data comes back as float64; float32 halves the cache and is exact enough
    # for intensities that are then windowed to 0..1.
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


class CaseFormat:
    """One file format: which paths it claims, how it reads them and how it writes predictions.

    Subclasses set the class attributes and implement :meth:`read` and :meth:`write`; adding a
    format is one such file plus one line in :data:`s2unet.io.formats.FORMATS`.

    Attributes:
        name: short name shown in messages and reports (``nifti``, ``picture``, ...).
        suffixes: lower-case file suffixes it claims (empty for folder formats).
        kind: ``"volume"`` (3D data, slices cut along the model's axis) or ``"image"`` (one 2D
            picture, served as a one-slice volume).
        output_suffix: suffix of the prediction files its writer produces.
    """

    name: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = "volume"
    output_suffix: ClassVar[str] = ".nii.gz"

    @property
    def planar(self) -> bool:
        """True for a format of single 2D pictures (one plane, no slice axis)."""
        return self.kind == "image"

    def stem(self, path: Path) -> Optional[str]:
        """The case id of ``path`` if this format claims it, else None.

        Args:
            path: a file or folder.

        Returns:
            The name without the claimed suffix, or None.
        """
        lower = path.name.lower()
        for suffix in self.suffixes:
            if lower.endswith(suffix) and len(lower) > len(suffix) and path.is_file():
                return path.name[: -len(suffix)]
        return None

    def read(self, path: Path, reorient: Reorient, values: str) -> "CaseImage":
        """Open ``path`` (lazily where the format allows).

        Args:
            path: a path :meth:`stem` claims.
            reorient: serve arrays in the convention :data:`ORIENTATION` (True), in a named
                orientation, or as stored (False); see :data:`Reorient`.
            values: ``"stored"`` keeps the file's values (Hounsfield units, 0..255, ...) for
                models trained on volumes, which window them; ``"unit"`` scales a 2D picture to
                0..1 by its stored type, as models trained on 2D images expect.

        Returns:
            The CaseImage.

        Raises:
            DataError: naming the file and what is wrong with it.
        """
        raise NotImplementedError

    def read_seg(self, path: Path, reorient: Reorient, mask_threshold: float, label_map: bool) -> np.ndarray:
        """Read a segmentation (a reference or lung mask) as the training data reads labels.

        Volume formats give the served array (voxels > 0 are foreground, or class indices);
        formats of 2D pictures override this to threshold or index their pixels.

        Args:
            path: a path :meth:`stem` claims.
            reorient: as :meth:`read`.
            mask_threshold: the foreground threshold of pictures (fraction of the value range).
            label_map: read an integer label map (multiclass) rather than a mask.

        Returns:
            The array.

        Raises:
            DataError: naming the file.
        """
        return self.read(path, reorient, "stored").get_array()

    def output_suffix_for(self, source: Path) -> str:
        """The suffix of prediction files for the case read from ``source``.

        Args:
            source: the input path.

        Returns:
            :attr:`output_suffix` unless the format keeps several (ITK: ``.mha`` or ``.nrrd``).
        """
        return self.output_suffix

    def placeholder_spacing(self, case: "CaseImage") -> bool:
        """True when ``case``'s spacing is most likely the 1 mm that tools write when they know none.

        Exactly 1 mm along every axis is what nibabel, SimpleITK and MetaImage write by default;
        a format whose spacing always comes from the acquisition (a DICOM series) says False.

        Args:
            case: a case this format read.
        """
        return all(z == 1.0 for z in case.zooms)

    def write(self, array: np.ndarray, like: "CaseImage", path: Path, dtype: Any, binary: bool = False) -> Path:
        """Write ``array`` (served orientation of ``like``) atomically with ``like``'s geometry.

        Args:
            array: data shaped like ``like.shape``.
            like: the case it was computed from.
            path: output file, ending with :attr:`output_suffix`.
            dtype: on-disk type: ``np.uint8`` for masks and label maps, ``np.float32`` for
                probabilities in 0..1.
            binary: the data is a 0/1 mask (a picture writer stores 0/255, to be visible).

        Returns:
            The written path.

        Raises:
            DataError: shape mismatch or values the dtype cannot hold.
        """
        raise NotImplementedError


class CaseImage:
    """A case opened by a :class:`CaseFormat`, served in its original or a conventional orientation.

    Attributes:
        path: the file (or the folder of a DICOM series).
        image: the nibabel image (its ``dataobj`` is in the ORIGINAL orientation).
        format: the format that read it (and writes predictions back).
        values: how intensities are served, ``"stored"`` or ``"unit"`` (see :meth:`CaseFormat.read`).
        extra: what the format's writer needs beyond the NIfTI geometry (e.g. ITK metadata).
        orientation: the served orientation (:data:`SERVED_AXCODES`), None when served as stored
            (always for 2D pictures, which are taken as displayed).
        ornt: nibabel orientation taking original array axes to served axes (identity when not
            reorienting).
    """

    def __init__(
        self,
        path: Path,
        image: nib.spatialimages.SpatialImage,
        reorient: Reorient,
        format: CaseFormat,
        values: str = "stored",
        extra: Optional[dict[str, Any]] = None,
    ) -> None:
        self.path = Path(path)
        self.image = image
        if len(image.shape) != 3:
            raise DataError(f"{self.path}: expected a 3D volume, got shape {tuple(image.shape)}")
        self.format = format
        self.values = values
        self.extra = dict(extra or {})
        # A picture has no geometry of its own (its affine is a placeholder): it is served as shown.
        self.orientation = None if format.planar else served_orientation(reorient)
        if self.orientation is not None:
            # io_orientation picks, for each array axis, the world axis it is closest to (so an
            # oblique acquisition is served in the nearest axis-aligned order, never resampled).
            target = axcodes2ornt(SERVED_AXCODES[self.orientation])
            self.ornt = ornt_transform(io_orientation(image.affine), target)
            self._inverse = ornt_transform(target, io_orientation(image.affine))
        else:
            self.ornt = _IDENTITY_ORNT.copy()
            self._inverse = _IDENTITY_ORNT

    @property
    def reoriented(self) -> bool:
        """Whether arrays are served in another order than stored."""
        return self.orientation is not None

    # --------------------------------------------------------------------------- geometry
    @property
    def planar(self) -> bool:
        """True for a 2D picture (a one-slice volume without through-plane geometry)."""
        return self.format.planar

    @property
    def dataobj(self):
        """The (lazy for NIfTI files) nibabel array proxy, in the original orientation."""
        return self.image.dataobj

    @property
    def header(self):
        """The nibabel header (for non-NIfTI formats, one built from the file's geometry)."""
        return self.image.header

    @property
    def original_shape(self) -> tuple[int, ...]:
        """Array shape on disk."""
        return tuple(int(s) for s in self.image.shape)

    @property
    def original_affine(self) -> np.ndarray:
        """Voxel-to-world (RAS) affine on disk."""
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
    def spacing(self) -> Optional[tuple[float, ...]]:
        """Spacing for metrics and reports: the served zooms, or None for a 2D picture (pixels)."""
        return None if self.planar else self.zooms

    def in_plane_spacing(self, axis: int) -> Optional[tuple[float, ...]]:
        """The spacing within slices cut along ``axis`` (mm), or None for a 2D picture (pixels)."""
        return None if self.planar else tuple(z for a, z in enumerate(self.zooms) if a != axis)

    def slice_axis(self, axis: int) -> Optional[int]:
        """The axis this case's slices are cut along: the model's ``axis`` for a volume, None
        for a 2D picture (one plane, nothing to cut)."""
        return None if self.planar else axis

    @property
    def implausible_spacing(self) -> bool:
        """True for a volume with a spacing outside :data:`PLAUSIBLE_SPACING_MM`."""
        low, high = PLAUSIBLE_SPACING_MM
        return not self.planar and not all(low <= z <= high for z in self.zooms)

    @property
    def spacing_caveat(self) -> Optional[str]:
        """Why the volume's mm (and mL) are not real ones, or None (also for 2D pictures: pixels)."""
        if self.planar:
            return None
        shown = "x".join(f"{z:g}" for z in self.zooms)
        if self.implausible_spacing:
            low, high = PLAUSIBLE_SPACING_MM
            return f"spacing {shown} mm is outside the plausible {low:g}..{high:g} mm"
        if self.format.placeholder_spacing(self):
            return f"spacing {shown} mm is the placeholder written when the spacing is unknown"
        return None

    @property
    def axcodes(self) -> tuple[str, ...]:
        """Orientation codes of the served axes, e.g. ('L', 'P', 'I')."""
        return nib.aff2axcodes(self.affine)

    @property
    def orientation_codes(self) -> Optional[str]:
        """The served axes' codes as one word (``"LPI"``), or None for a 2D picture (taken as displayed)."""
        return None if self.planar else "".join(self.axcodes)

    @property
    def original_axcodes(self) -> tuple[str, ...]:
        """Orientation codes of the array on disk."""
        return nib.aff2axcodes(self.original_affine)

    @property
    def dtype(self) -> np.dtype:
        """dtype of decoded arrays: the stored type, or float32 when the file is scaled."""
        proxy = self.image.dataobj
        if getattr(proxy, "slope", 1.0) == 1.0 and getattr(proxy, "inter", 0.0) == 0.0:
            return np.dtype(self.image.get_data_dtype())
        return np.dtype(np.float32)

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

    def to_convention(self, array: np.ndarray) -> np.ndarray:
        """A served array (or a stack of them, the volume axes last) as :data:`ORIENTATION`
        serves it: what to show for a case served in another orientation (a legacy checkpoint's).
        Arrays served as stored are returned as they are."""
        if self.orientation in (None, ORIENTATION):
            return array
        ornt = ornt_transform(axcodes2ornt(SERVED_AXCODES[self.orientation]), axcodes2ornt(SERVED_AXCODES[ORIENTATION]))
        flat = array.reshape(-1, *array.shape[-3:])
        out = np.stack([apply_orientation(volume, ornt) for volume in flat])
        return out.reshape(*array.shape[:-3], *out.shape[1:])

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

    def picture(self) -> np.ndarray:
        """A 2D picture's pixels as displayed, (H, W) (rows top to bottom).

        Raises:
            DataError: the case is a volume.
        """
        if not self.planar:
            raise DataError(f"{self.path}: a {self.format.name} volume is not a 2D picture")
        return np.ascontiguousarray(np.asarray(self.image.dataobj)[:, :, 0].T)

    def pixels(self) -> np.ndarray:
        """What a model segments: a 2D picture's (H, W) pixels as displayed (:meth:`picture`),
        else the served volume (:meth:`get_array`)."""
        return self.picture() if self.planar else self.get_array()

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

    def write_like(self, array: np.ndarray, path: PathLike, dtype: Any, binary: bool = False) -> Path:
        """Write a prediction of this case with its geometry, in its format's output format.

        Args:
            array: served-orientation data (``self.shape``; a 2D picture's (H, W) also works).
            path: output file (its suffix should be ``self.format.output_suffix``).
            dtype: ``np.uint8`` (masks, label maps) or ``np.float32`` (probabilities).
            binary: the data is a 0/1 mask (see :meth:`CaseFormat.write`).

        Returns:
            The written path.
        """
        return self.format.write(np.asarray(array), self, Path(path), dtype, binary)

    def __repr__(self) -> str:
        return f"CaseImage({str(self.path)!r}, format={self.format.name}, shape={self.shape}, axcodes={self.axcodes})"


def scanner_image(data: np.ndarray, lps_affine: np.ndarray) -> nib.Nifti1Image:
    """An in-memory NIfTI image of a volume placed in DICOM/ITK patient coordinates (LPS).

    Args:
        data: (x, y, z) array.
        lps_affine: voxel-to-LPS affine (DICOM and ITK world coordinates).

    Returns:
        The image with the RAS affine NIfTI uses, as qform and sform with code 1 (scanner).
    """
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_affine  # LPS -> RAS flips x and y
    image = nib.Nifti1Image(data, affine, dtype=data.dtype)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image


def check_same_geometry(a: CaseImage, b: CaseImage, atol: float = 1e-3) -> None:
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


def check_integer_fit(arr: np.ndarray, dtype: Any, path: Path) -> np.ndarray:
    """``arr`` cast to ``dtype``, refusing float values an integer type cannot hold exactly.

    Args:
        arr: the data to write (bool becomes uint8 first).
        dtype: the on-disk type.
        path: the output, named in the error.

    Returns:
        The cast array.

    Raises:
        DataError: the values do not fit.
    """
    arr = arr.astype(np.uint8) if arr.dtype == np.bool_ else arr
    out_dtype = np.dtype(dtype)
    cast = arr.astype(out_dtype)
    # An integer file cannot hold probabilities; refuse rather than silently truncate (nibabel
    # would instead rescale with scl_slope, which most viewers show as-is).
    if np.issubdtype(out_dtype, np.integer) and not np.array_equal(cast, arr):
        raise DataError(f"{path}: values do not fit {out_dtype} exactly; threshold/round before saving")
    return cast
