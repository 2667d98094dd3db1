"""2D readers: PNG 8/16-bit, TIFF, JPEG, DICOM (rescale, MONOCHROME1), masks and label maps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from s2unet.data import DataError, read_dicom, read_image, read_label_map, read_mask


def _gradient(h: int = 16, w: int = 20, top: int = 255) -> np.ndarray:
    return (np.linspace(0, top, h * w).reshape(h, w)).round()


def _write_dicom(path: Path, pixels: np.ndarray, photometric: str, slope: float = 1.0, intercept: float = 0.0,
                 **tags: object) -> None:
    """A single-frame 16-bit DICOM file; ``tags`` adds or replaces attributes (e.g. positions)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = pixels.astype("<u2").tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(str(path), enforce_file_format=True)


# ------------------------------------------------------------------------------------- images
def test_png_8bit_is_scaled_by_255(tmp_path: Path) -> None:
    arr = _gradient().astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == arr.shape
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-6)


def test_png_16bit_is_scaled_by_65535(tmp_path: Path) -> None:
    arr = _gradient(top=65535).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(out, arr / 65535.0, atol=1e-6)
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)


def test_rgb_png_becomes_luma_gray(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 1] = 100
    rgb[..., 2] = 50
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = read_image(tmp_path / "c.png")
    assert out.shape == (4, 5)
    np.testing.assert_allclose(out, (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255.0, atol=1e-5)


def test_tiff_uint16_float_and_rgb(tmp_path: Path) -> None:
    arr16 = _gradient(top=65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr16)
    np.testing.assert_allclose(read_image(tmp_path / "a.tif"), arr16 / 65535.0, atol=1e-6)

    f = np.linspace(-100.0, 300.0, 12, dtype=np.float32).reshape(3, 4)
    tifffile.imwrite(tmp_path / "f.tiff", f)
    np.testing.assert_allclose(read_image(tmp_path / "f.tiff"), (f + 100) / 400, atol=1e-6)  # min-max

    rgb = np.full((3, 4, 3), 255, np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.tif"), 1.0, atol=1e-5)


def test_jpeg_reads_close_to_source(tmp_path: Path) -> None:
    arr = _gradient(32, 32).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (32, 32) and 0.0 <= out.min() and out.max() <= 1.0
    assert np.abs(out - arr / 255.0).mean() < 0.02  # lossy, but the same picture


def test_dicom_rescale_slope_intercept(tmp_path: Path) -> None:
    stored = _gradient(8, 8, top=1000).astype(np.uint16)
    _write_dicom(tmp_path / "r.dcm", stored, "MONOCHROME2", slope=2.0, intercept=-1024.0)
    raw = read_dicom(tmp_path / "r.dcm", scale=False)
    np.testing.assert_allclose(raw, stored * 2.0 - 1024.0)
    scaled = read_image(tmp_path / "r.dcm")
    assert scaled.dtype == np.float32 and 0.0 <= scaled.min() and scaled.max() <= 1.0
    # Monotone in the stored value and spanning the range.
    order = np.argsort(stored.ravel(), kind="stable")
    assert np.all(np.diff(scaled.ravel()[order]) >= 0)
    assert scaled.min() == 0.0 and scaled.max() == 1.0


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = _gradient(8, 8, top=4000).astype(np.uint16)
    _write_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2")
    _write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1")
    m2, m1 = read_image(tmp_path / "m2.dcm"), read_image(tmp_path / "m1.dcm")
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    assert m1[0, 0] == 1.0  # the lowest stored value is white in MONOCHROME1
    # A DICOM export without suffix is recognised by its preamble.
    (tmp_path / "m1.dcm").rename(tmp_path / "export_noext")
    np.testing.assert_allclose(read_image(tmp_path / "export_noext"), m1)


# -------------------------------------------------------------------------------------- masks
def test_mask_formats(tmp_path: Path) -> None:
    truth = np.zeros((6, 6), bool)
    truth[1:4, 2:5] = True
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "m255.png")
    Image.fromarray(truth.astype(np.uint8)).save(tmp_path / "m01.png")
    Image.fromarray(truth).save(tmp_path / "mbool.png")  # mode "1"
    tifffile.imwrite(tmp_path / "m16.tif", truth.astype(np.uint16) * 65535)
    for name in ("m255.png", "m01.png", "mbool.png", "m16.tif"):
        out = read_mask(tmp_path / name, 0.5)
        assert out.dtype == np.bool_, name
        np.testing.assert_array_equal(out, truth, err_msg=name)


def test_antialiased_mask_threshold_is_a_fraction_of_range(tmp_path: Path) -> None:
    edge = np.array([[0, 60, 127, 128, 200, 255]], np.uint8)
    Image.fromarray(edge).save(tmp_path / "aa.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "aa.png", 0.5), [[False, False, False, True, True, True]])
    np.testing.assert_array_equal(read_mask(tmp_path / "aa.png", 0.2), [[False, True, True, True, True, True]])
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)  # a red outline counts as foreground
    Image.fromarray(rgb).save(tmp_path / "red.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "red.png"), [[True, False], [False, False]])
    with pytest.raises(DataError):
        read_mask(tmp_path / "aa.png", 1.5)


def test_label_values_in_a_mask_are_foreground_not_empty(tmp_path: Path) -> None:
    # A 0/1/2 label map given to a binary task: half the 8-bit range (127.5) would read it as empty.
    labels = np.array([[0, 1, 2], [2, 0, 0]], np.uint8)
    truth = labels > 0
    Image.fromarray(labels).save(tmp_path / "l8.png")
    tifffile.imwrite(tmp_path / "l16.tif", labels.astype(np.uint16))
    tifffile.imwrite(tmp_path / "lf.tif", labels.astype(np.float32))
    for name in ("l8.png", "l16.tif", "lf.tif"):
        np.testing.assert_array_equal(read_mask(tmp_path / name, 0.5), truth, err_msg=name)
    # A low threshold must not split a label map either (0.05 x 255 = 12.75 < 20).
    Image.fromarray(np.array([[0, 5, 20]], np.uint8)).save(tmp_path / "l20.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "l20.png", 0.05), [[False, True, True]])


def test_mask_whose_values_all_fall_below_the_threshold_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 100, 100]], np.uint8)).save(tmp_path / "dim.png")  # not 0/255, not labels
    with pytest.raises(DataError, match=r"dim\.png.*mask_threshold"):
        read_mask(tmp_path / "dim.png", 0.5)
    np.testing.assert_array_equal(read_mask(tmp_path / "dim.png", 0.3), [[False, True, True]])  # 100 > 76.5
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "empty.png")
    assert not read_mask(tmp_path / "empty.png").any()  # a truly empty mask is still allowed


def test_label_map_palette_indices_and_rgb_rejected(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(labels, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "p.png")
    out = read_label_map(tmp_path / "p.png")
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, labels)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="rgb.png"):
        read_label_map(tmp_path / "rgb.png")


def test_failures_raise_data_error_naming_the_file(tmp_path: Path) -> None:
    assert issubclass(DataError, ValueError)
    with pytest.raises(DataError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="broken.png"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(DataError, match="broken.png"):
        read_mask(tmp_path / "broken.png")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(DataError, match="broken.dcm"):
        read_image(tmp_path / "broken.dcm")
    (tmp_path / "broken.tif").write_bytes(b"II*\0garbage")
    with pytest.raises(DataError, match="broken.tif"):
        read_image(tmp_path / "broken.tif")


def test_multi_page_tiff_is_refused_naming_the_pages(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 8, 8), np.uint16), photometric="minisblack")  # 3 pages
    with pytest.raises(DataError, match=r"stack\.tif: multi-page TIFF with 3 pages; expected one 2D image"):
        read_image(tmp_path / "stack.tif")
    tifffile.imwrite(tmp_path / "one.tif", np.full((8, 8), 7, np.uint16))
    assert read_image(tmp_path / "one.tif").shape == (8, 8)
