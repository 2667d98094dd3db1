"""2D pictures: PNG, JPEG, TIFF, BMP and single-frame DICOM images, masks and label maps.

The functions return plain numpy arrays of shape (H, W): images as float32 in 0..1, masks as
bool, label maps as int64. :class:`PictureFormat` serves a picture as a one-slice
:class:`~s2unet.io.case.CaseImage` and writes predictions as PNG. Any failure (missing file,
unknown format, undecodable pixels, a shape that is not 2D) raises
:class:`~s2unet.io.errors.DataError` naming the file, so a bad file in a set of thousands is
found from the message alone.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Union

import nibabel as nib
import numpy as np

from .atomic import atomic_path
from .case import CaseFormat, CaseImage, Reorient, check_integer_fit
from .dicom_seg import SOURCES_KEY
from .errors import DataError

PathLike = Union[str, Path]

#: File suffixes (lower case) treated as 2D images by the readers and by case discovery.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")

_DICOM_SUFFIXES = (".dcm", ".dicom")
_TIFF_SUFFIXES = (".tif", ".tiff")
# ITU-R BT.601 luma, the same weights PIL uses for "RGB" -> "L", so a colour PNG and its gray
# version read the same.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
# DICOM X-rays often carry burned-in labels or collimator edges at the extremes of the range;
# scaling between robust percentiles keeps those few pixels from compressing the anatomy.
_DICOM_PERCENTILES = (0.5, 99.5)
#: Masks of whole numbers whose maximum is 2..LABEL_MAP_MAX are label maps (0 = background):
#: class indices, far below the 0/255 or 0/65535 of masks that use their dtype's range.
LABEL_MAP_MAX = 31


# ------------------------------------------------------------------------------------ raw pixels
def is_dicom_file(path: Path) -> bool:
    """True for a .dcm/.dicom suffix or, for suffix-less exports, the 'DICM' preamble magic."""
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found")


def _read_pil(path: Path, palette_as_index: bool) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("P", "PA"):
                # Palette files: indices are the labels of a label map / mask, but an image's
                # gray value is the colour the palette points at.
                if palette_as_index:
                    return np.array(im.getchannel(0) if mode == "PA" else im)
                im = im.convert("RGB")
            elif mode == "LA":
                im = im.getchannel("L")
            elif mode in ("RGBA", "RGBX", "RGBa"):
                im = im.convert("RGB")
            elif mode not in ("1", "L", "RGB", "I", "F") and not mode.startswith("I;16"):
                im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV: bring to RGB first
            arr = np.array(im)
    except DataError:
        raise
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    if arr.dtype.byteorder == ">":  # "I;16B" comes back big-endian
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            # Reduced-resolution pages are previews of the first one, not more planes.
            pages = len([p for p in tf.pages if not getattr(p, "is_reduced", False)])
            page = tf.pages[0]
            arr = page.asarray() if pages == 1 else None
            planar_separate = int(getattr(page, "planarconfig", 1)) == 2
    except Exception as exc:
        raise DataError(f"{path}: cannot read TIFF ({type(exc).__name__}: {exc})") from exc
    if arr is None:
        # Reading page 1 of a stack would score or train on one plane while the file holds more.
        raise DataError(f"{path}: multi-page TIFF with {pages} pages; expected one 2D image: save one picture per "
                        "file, or the stack as a volume (.nii.gz, .mha)")
    if arr.ndim == 3 and planar_separate:
        arr = np.moveaxis(arr, 0, -1)  # (S, H, W) -> (H, W, S)
    return arr


def _read_dicom_dataset(path: Path):
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array
    except Exception as exc:
        raise DataError(
            f"{path}: cannot read DICOM pixels ({type(exc).__name__}: {exc}); compressed transfer "
            "syntaxes need a decoder plugin such as pylibjpeg"
        ) from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(f"{path}: DICOM has {frames} frames; expected a single 2D image")
    return ds, arr


def read_raw(path: PathLike, palette_as_index: bool = True) -> np.ndarray:
    """Read the stored pixel values of a 2D image file without any scaling.

    Args:
        path: a PNG, JPEG, TIFF, BMP or DICOM file.
        palette_as_index: for palette PNGs, return palette indices (masks, label maps) rather
            than the colours they point at.

    Returns:
        The array as stored: (H, W) or (H, W, C) with C in {3, 4} for colour; DICOM pixels
        are returned before the modality LUT.

    Raises:
        DataError: the file is missing, unreadable, or not 2D.
    """
    path = Path(path)
    _check_exists(path)
    if is_dicom_file(path):
        arr = _read_dicom_dataset(path)[1]
    elif path.suffix.lower() in _TIFF_SUFFIXES:
        arr = _read_tiff(path)
    else:
        arr = _read_pil(path, palette_as_index)
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # gray+alpha, RGBA: alpha is not intensity
        arr = arr[..., :1][..., 0] if arr.shape[-1] == 2 else arr[..., :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise DataError(f"{path}: expected a 2D gray or RGB image, got an array of shape {arr.shape}")
    return arr


# ----------------------------------------------------------------------------------------- images
def _to_gray(arr: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) luma; (H, W) unchanged."""
    if arr.ndim == 3:
        return (arr[..., :3].astype(np.float64) @ _LUMA).astype(np.float32)
    return arr


def _minmax(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Scale to 0..1 between lo and hi (clipped); a constant image becomes all zeros."""
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(hi - lo) or hi <= lo:
        return np.zeros_like(arr, dtype=np.float32)
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def read_dicom_values(path: Path) -> tuple[Any, np.ndarray]:
    """A single-frame DICOM file's dataset and its modality values (RescaleSlope/Intercept applied).

    Args:
        path: an existing DICOM file.

    Returns:
        ``(dataset, values)``: the pydicom dataset and float64 (H, W) values (Hounsfield units
        for CT; colour becomes luma gray).

    Raises:
        DataError: unreadable file, compressed pixels without a decoder, multi-frame data.
    """
    from pydicom.pixels import apply_modality_lut

    ds, arr = _read_dicom_dataset(path)
    try:
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    except Exception as exc:
        raise DataError(f"{path}: cannot apply the DICOM modality LUT ({exc})") from exc
    values = _to_gray(values) if values.ndim == 3 else values
    if values.ndim != 2:
        raise DataError(f"{path}: expected a 2D DICOM image, got shape {values.shape}")
    return ds, values


def read_dicom(path: PathLike, scale: bool = True) -> np.ndarray:
    """Read a single-frame DICOM image (an X-ray, or one CT/MR slice).

    Args:
        path: the DICOM file.
        scale: True to return display values in 0..1: modality LUT applied
            (RescaleSlope/Intercept), scaled between the 0.5th and 99.5th percentiles and
            inverted for MONOCHROME1 (where high values are dark) so that bone is always bright.
            False to return the modality values themselves (e.g. Hounsfield units for CT),
            float32, without inversion.

    Returns:
        float32 array (H, W).

    Raises:
        DataError: unreadable file, compressed pixels without a decoder, multi-frame data.
    """
    path = Path(path)
    _check_exists(path)
    ds, values = read_dicom_values(path)
    if not scale:
        return values.astype(np.float32)
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, _DICOM_PERCENTILES) if finite.size else (0.0, 0.0)
    if hi <= lo and finite.size:  # a few distinct values: percentiles collapse, use min/max
        lo, hi = float(finite.min()), float(finite.max())
    out = _minmax(values, float(lo), float(hi))
    if str(getattr(ds, "PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


def _read_2d(path: PathLike, dicom_scale: bool) -> tuple[np.ndarray, bool]:
    """The stored array of a 2D file and whether it was DICOM (read with ``read_dicom``)."""
    path = Path(path)
    _check_exists(path)
    if is_dicom_file(path):
        return read_dicom(path, scale=dicom_scale), True
    return read_raw(path, palette_as_index=False), False


def read_image(path: PathLike) -> np.ndarray:
    """Read a 2D image as float32 gray values in 0..1.

    Scaling by stored type: uint8 / 255, uint16 / 65535 (the dtype range, so that the same
    pixel value means the same input in every image; 12-bit data stored in 16-bit files therefore
    looks dark — convert such files or use DICOM), bool as 0/1, other integer types and float
    data outside 0..1 min-max per image; float data already in 0..1 is kept. Colour images
    become luma gray. DICOM goes through :func:`read_dicom`. NaN pixels are kept (the data check
    reports them) rather than silently replaced.

    Args:
        path: PNG, JPEG, TIFF, BMP or DICOM file.

    Returns:
        float32 array (H, W) in 0..1 (NaN where the file holds NaN).

    Raises:
        DataError: missing, unreadable or non-2D file.
    """
    arr, dicom = _read_2d(path, dicom_scale=True)
    if dicom:
        return arr
    kind = arr.dtype
    gray = _to_gray(arr)
    if kind == np.bool_:
        return gray.astype(np.float32)
    if kind == np.uint8:
        return (gray.astype(np.float32) / 255.0).astype(np.float32)
    if kind == np.uint16:
        return (gray.astype(np.float32) / 65535.0).astype(np.float32)
    gray = gray.astype(np.float32)
    finite = gray[np.isfinite(gray)]
    if finite.size == 0:
        return gray
    lo, hi = float(finite.min()), float(finite.max())
    if np.issubdtype(kind, np.floating) and lo >= 0.0 and hi <= 1.0:
        return gray
    out = _minmax(gray, lo, hi)
    out[~np.isfinite(gray)] = np.nan
    return out


def read_slice_values(path: PathLike) -> np.ndarray:
    """Read a 2D CT slice file keeping its intensities, for a model trained on volumes.

    Unlike :func:`read_image` nothing is rescaled, so the model's window applies exactly as it
    does to a volume: DICOM gives its modality values (Hounsfield units for CT), an 8-bit PNG
    its 0..255 values. Colour becomes luma gray in the file's own integer type.

    Args:
        path: PNG, JPEG, TIFF, BMP or DICOM file.

    Returns:
        (H, W) array: float32 for DICOM, else the stored dtype.

    Raises:
        DataError: missing, unreadable or non-2D file.
    """
    arr, dicom = _read_2d(path, dicom_scale=False)
    if dicom:
        return arr
    if arr.ndim == 3:
        gray = _to_gray(arr)
        arr = np.round(gray).astype(arr.dtype) if np.issubdtype(arr.dtype, np.integer) else gray
    return arr


# ------------------------------------------------------------------------------ masks and labels
def mask_value_range(arr: np.ndarray) -> float:
    """The full-on value of a mask array, used to turn a fractional threshold into a cut-off.

    0/1 masks (max <= 1) -> 1; 8-bit-style masks (max <= 255, e.g. 0/255 or anti-aliased)
    -> 255; anything larger (16-bit 0/65535, floats) -> its own maximum.

    Args:
        arr: the raw mask values.

    Returns:
        The value that counts as fully foreground.
    """
    if arr.size == 0:
        return 1.0
    top = float(np.nanmax(arr)) if np.issubdtype(arr.dtype, np.floating) else float(arr.max())
    if top <= 1.0:
        return 1.0
    if top <= 255.0:
        return 255.0
    return top


def is_label_map(arr: np.ndarray) -> bool:
    """True when mask values are small whole numbers (maximum 2..``LABEL_MAP_MAX``): a label map.

    Args:
        arr: raw mask values (NaN-free).

    Returns:
        Whether every value > 0 is to be read as foreground, whatever the threshold.
    """
    if arr.size == 0 or arr.dtype == np.bool_:
        return False
    top = float(arr.max())
    if not 1.0 < top <= LABEL_MAP_MAX:
        return False
    return not np.issubdtype(arr.dtype, np.floating) or bool(np.all(arr == np.round(arr)))


def mask_foreground(arr: np.ndarray, threshold: float, path: PathLike) -> np.ndarray:
    """Foreground of a single-channel mask array, by the rule :func:`read_mask` documents.

    Args:
        arr: the raw (H, W) values (bool, integer or float; NaN counts as background).
        threshold: fraction of the value range in [0, 1), for dtype-range masks.
        path: the file the values came from, named in the error.

    Returns:
        bool array (H, W).

    Raises:
        DataError: the mask has non-zero values but none reach the threshold and it is not a
            small-integer label map, so it would otherwise be read as empty.
    """
    if arr.dtype == np.bool_:
        return arr.copy()
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr, nan=0.0)
    if is_label_map(arr):
        # 0/1/2... label values: at a fraction of the 8-bit range they would all be background.
        return np.asarray(arr > 0)
    top = float(arr.max()) if arr.size else 0.0
    value_range = mask_value_range(arr)
    foreground = np.asarray(arr > threshold * value_range)
    if top > 0 and not foreground.any():
        raise DataError(
            f"{path}: mask values reach only {top:g}, none above data.mask_threshold {threshold:g} x "
            f"{value_range:g} = {threshold * value_range:g}, and it is not a label map (whole numbers "
            f"1..{LABEL_MAP_MAX}); refusing to read it as empty: store it as 0/255 or 0/1, or lower "
            "data.mask_threshold"
        )
    return foreground


def read_mask(path: PathLike, threshold: float = 0.5) -> np.ndarray:
    """Read a binary mask stored as 0/255, 0/1, bool, anti-aliased gray values or label values.

    Integer label values (whole numbers whose maximum is 2..``LABEL_MAP_MAX``, e.g. a 0/1/2 label
    map given to a binary task) are read as labels: every value > 0 is foreground. Otherwise
    foreground is ``value > threshold * range`` with ``range`` from :func:`mask_value_range`
    (1 for 0/1 masks, 255 for 8-bit masks, the maximum otherwise), so 0.5 keeps the pixels at
    least half covered in an anti-aliased mask. A mask with non-zero values none of which
    passes is refused rather than read as empty. Colour masks use the brightest channel, so a
    pure red or green outline counts as foreground. Palette PNGs use their indices.

    Args:
        path: the mask file (any format :func:`read_raw` reads).
        threshold: fraction of the value range in [0, 1).

    Returns:
        bool array (H, W).

    Raises:
        DataError: unreadable file, a threshold outside [0, 1), or non-zero values that
            neither pass the threshold nor form a label map.
    """
    if not 0.0 <= threshold < 1.0:
        raise DataError(f"{path}: mask threshold {threshold} is outside [0, 1)")
    arr = read_raw(path, palette_as_index=True)
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    return mask_foreground(arr, threshold, path)


def read_label_map(path: PathLike) -> np.ndarray:
    """Read an integer label map (0 = background, 1..K classes).

    Args:
        path: a single-channel or palette image (palette indices are the labels).

    Returns:
        int64 array (H, W).

    Raises:
        DataError: unreadable file, a colour (RGB) file, or non-integer values.
    """
    arr = read_raw(path, palette_as_index=True)
    if arr.ndim == 3:
        raise DataError(
            f"{path}: a label map must be single-channel (or palette) with one integer per class; "
            "this file is RGB"
        )
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"{path}: label map holds non-integer values")
    return arr.astype(np.int64)


# ------------------------------------------------------------------------------------ the format
def write_png(path: Path, array: np.ndarray) -> None:
    """Write a 2D uint8 or uint16 array as a grayscale PNG (atomically).

    Args:
        path: output ``.png`` file.
        array: (H, W) integer array.
    """
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")


# (row, column) directions of a slice displayed as the orientation convention shows it, as
# (LPS axis, sign) of ImageOrientationPatient's cosines: axial (rows run to the patient's left,
# columns to the back), coronal and sagittal (columns run down).
_DISPLAYED_COSINES = {((0, 1), (1, 1)): "axial", ((0, 1), (2, -1)): "coronal", ((1, 1), (2, -1)): "sagittal"}


def _warn_unless_displayed(path: Path) -> None:
    """Warn when a 2D DICOM slice's ImageOrientationPatient says it is not stored as displayed.

    A 2D slice is taken as displayed (it is never reoriented); a slice tagged rotated or mirrored
    against the orientation convention would reach the model that way, so say so. A file
    without the tag has nothing to say.
    """
    import pydicom

    try:
        cosines = getattr(pydicom.dcmread(str(path), stop_before_pixels=True), "ImageOrientationPatient", None)
    except Exception:  # the pixel reader has already named an unreadable file
        return
    if cosines is None or len(cosines) != 6:
        return
    row, column = np.asarray([float(v) for v in cosines[:3]]), np.asarray([float(v) for v in cosines[3:]])
    key = tuple((int(np.argmax(np.abs(c))), int(np.sign(c[np.argmax(np.abs(c))]))) for c in (row, column))
    if key not in _DISPLAYED_COSINES:
        warnings.warn(f"{path}: ImageOrientationPatient {[round(float(v), 3) for v in cosines]} says the slice is "
                      "rotated or mirrored against the standard display (axial 1,0,0,0,1,0): it is taken as "
                      "stored, so the model sees it that way; rotate it to the displayed orientation first",
                      stacklevel=2)


class PictureFormat(CaseFormat):
    """2D pictures (PNG, JPEG, TIFF, BMP, single-frame DICOM) as one-slice volumes; PNG output.

    ``values="unit"`` reads with :func:`read_image` (models trained on 2D images),
    ``"stored"`` with :func:`read_slice_values` (a CT slice for a model trained on volumes,
    which windows it itself). Suffix-less DICOM exports are recognised by their preamble.
    """

    name = "picture"
    suffixes = IMAGE_SUFFIXES
    kind = "image"
    output_suffix = ".png"

    def stem(self, path: Path) -> Union[str, None]:
        """See :meth:`CaseFormat.stem`; a suffix-less file holding DICOM is its own case."""
        found = super().stem(path)
        if found is None and not Path(path.name).suffix and path.is_file() and is_dicom_file(path):
            return path.name
        return found

    def read(self, path: Path, reorient: Reorient, values: str) -> CaseImage:
        """See :meth:`CaseFormat.read`."""
        pixels = read_image(path) if values == "unit" else read_slice_values(path)
        if values == "stored" and is_dicom_file(path):  # a CT slice, for a model trained on volumes
            _warn_unless_displayed(path)
        pixels = pixels.astype(np.uint8) if pixels.dtype == np.bool_ else pixels
        # Stored as (W, H, 1) so slice 0 shown as a picture is array[:, :, 0].T, like a volume's;
        # taken as displayed (CaseImage never reorients a picture).
        volume = np.ascontiguousarray(pixels.T[..., None])
        image = nib.Nifti1Image(volume, np.eye(4), dtype=volume.dtype)
        extra = {SOURCES_KEY: [path]} if is_dicom_file(path) else None  # its DICOM-SEG references it
        return CaseImage(path, image, reorient, self, values, extra)

    def read_seg(self, path: Path, reorient: Reorient, mask_threshold: float, label_map: bool) -> np.ndarray:
        """The mask (:func:`read_mask`, bool) or label map (:func:`read_label_map`), (H, W) as displayed."""
        return read_label_map(path) if label_map else read_mask(path, mask_threshold)

    def write(self, array: np.ndarray, like: CaseImage, path: Path, dtype: Any, binary: bool = False) -> Path:
        """See :meth:`CaseFormat.write`: an 8-bit PNG.

        Probabilities (float dtype) become ``round(255 * p)``; binary masks 0/255 so they are
        visible; label maps keep their class indices.
        """
        arr = np.asarray(array)
        if arr.shape == like.shape:
            arr = arr[:, :, 0].T
        height_width = like.shape[1::-1]
        if arr.shape != height_width:
            raise DataError(f"{path}: array shape {arr.shape} does not match {like.path} ({height_width[0]}x{height_width[1]} pixels)")
        if np.issubdtype(np.dtype(dtype), np.floating):
            arr = np.round(np.clip(arr, 0.0, 1.0) * 255)
        elif binary:
            arr = arr.astype(np.uint8) * 255
        write_png(path, check_integer_fit(arr, np.uint8, path))
        return path
