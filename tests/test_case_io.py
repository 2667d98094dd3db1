"""Case I/O through the format registry (s2unet/io): round trips per format with geometry, DICOM
series ordering and spacing, clear refusals, and infer.py on a CT slice picture and a DICOM series."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from s2unet.cli import main
from s2unet.config import config_from_dict
from s2unet.data import DataError, read_case
from s2unet.io import formats
from s2unet.io.formats import FORMATS, case_stem, read_labels
from s2unet.io.pictures import PictureFormat
from s2unet.models import create_model_from_config
from s2unet.models.checkpoint import atomic_save, model_payload
from test_data_readers import _write_dicom

# An oblique, anisotropic geometry: axes permuted and flipped, so a lost or transposed affine shows.
AFFINE = np.array([[0.0, -0.8, 0.0, 10.0], [0.7, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]])


def _labels(shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random(shape) > 0.5).astype(np.uint8)


# -------------------------------------------------------------------------------- round trips
def test_nifti_round_trip_keeps_array_and_geometry(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), AFFINE), str(tmp_path / "ct.nii.gz"))
    case = read_case(tmp_path / "ct.nii.gz")
    labels = _labels(case.shape)
    out = case.write_like(labels, tmp_path / f"p{case.format.output_suffix_for(case.path)}", np.uint8, binary=True)
    again = read_case(out)
    assert out.name == "p.nii.gz" and np.array_equal(again.get_array(), labels)
    assert np.allclose(again.original_affine, AFFINE) and again.zooms == case.zooms


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_round_trip_keeps_array_geometry_and_format(tmp_path: Path, suffix: str) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # ITK order (z, y, x)
    itk = sitk.GetImageFromArray(data)
    itk.SetSpacing((0.7, 0.8, 2.5))
    itk.SetOrigin((10.0, -5.0, 3.0))
    itk.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(itk, str(tmp_path / f"ct{suffix}"))
    case = read_case(tmp_path / f"ct{suffix}", reorient=False)
    assert case.shape == (6, 5, 4) and np.array_equal(case.get_array(), data.transpose(2, 1, 0))
    assert sorted(case.zooms) == pytest.approx(sorted((0.7, 0.8, 2.5)))
    served = read_case(tmp_path / f"ct{suffix}")  # served in the orientation convention, written back unturned
    labels = _labels(served.shape)
    out = served.write_like(labels, tmp_path / f"p{served.format.output_suffix_for(served.path)}", np.uint8)
    assert out.suffix == suffix
    back = sitk.ReadImage(str(out))
    assert back.GetSpacing() == pytest.approx(itk.GetSpacing()) and back.GetOrigin() == pytest.approx(itk.GetOrigin())
    assert back.GetDirection() == pytest.approx(itk.GetDirection())
    assert np.array_equal(read_case(out).get_array(), labels)


def test_picture_round_trip_is_a_one_slice_volume(tmp_path: Path) -> None:
    pixels = np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 200  # 16-bit, (H, W) = (12, 20)
    Image.fromarray(pixels).save(tmp_path / "slice.png")
    case = read_case(tmp_path / "slice.png")  # a volume model: stored values
    assert case.planar and case.shape == (20, 12, 1) and np.array_equal(case.picture(), pixels)
    assert case.spacing is None  # no geometry: metrics and reports in pixels
    labels = _labels((12, 20))
    out = case.write_like(labels, tmp_path / "p.png", np.uint8, binary=True)
    assert np.array_equal(np.asarray(Image.open(out)), labels * 255)
    assert np.array_equal(read_case(out).picture(), labels * 255)
    unit = read_case(tmp_path / "slice.png", "image")  # an image model: 0..1 by the stored type
    np.testing.assert_allclose(unit.picture(), pixels / 65535.0, atol=1e-6)


# -------------------------------------------------------------------------------- DICOM series
ORIENTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _series(folder: Path, n: int = 4, gap: float = 2.5, rows: int = 6, cols: int = 8,
            override: Optional[dict[int, dict[str, object]]] = None) -> Path:
    """A CT series whose file names run against the slice positions (z descending by name)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        pixels = np.full((rows, cols), 100 * k, np.uint16)
        pixels[0, 0] = 7  # marks the first row / column
        tags = dict(Modality="CT", SeriesInstanceUID="1.2.3.4", ImageOrientationPatient=ORIENTATION,
                    ImagePositionPatient=[-20.0, -30.0, 40.0 + gap * k], PixelSpacing=[0.6, 0.9])
        tags.update((override or {}).get(k, {}))
        _write_dicom(folder / f"im{n - k:03d}.dcm", pixels, "MONOCHROME2", slope=1.0, intercept=-1024.0, **tags)
    return folder


def test_dicom_series_is_one_volume_in_position_order_with_its_spacing(tmp_path: Path) -> None:
    folder = _series(tmp_path / "ct01")
    assert case_stem(folder, "volume") == "ct01"
    case = read_case(folder, reorient=False)
    arr = case.get_array()
    assert case.shape == (8, 6, 4) and case.format.name == "dicom-series"
    # Sorted by ImagePositionPatient (the file names run backwards), HU rescale applied.
    assert [float(arr[3, 3, k]) for k in range(4)] == [-1024.0, -924.0, -824.0, -724.0]
    assert arr[0, 0, 0] == 7 - 1024  # axis 0 = column, axis 1 = row
    assert case.zooms == pytest.approx((0.9, 0.6, 2.5))
    # LPS -> RAS: x and y flip sign; the origin is the first slice's position.
    assert np.allclose(case.original_affine[:3, 3], [20.0, 30.0, 40.0])
    assert np.allclose(np.diag(case.original_affine)[:3], [-0.9, -0.6, 2.5])
    # Its prediction is NIfTI with the series geometry.
    out = read_case(folder).write_like(_labels((8, 6, 4))[::-1, ::-1], tmp_path / "p.nii.gz", np.uint8)
    assert np.allclose(nib.load(str(out)).affine, case.original_affine)


def test_dicom_series_with_mixed_sizes_or_spacing_names_the_file(tmp_path: Path) -> None:
    sizes = _series(tmp_path / "sizes", n=3)
    (sizes / "im001.dcm").unlink()
    _write_dicom(sizes / "im001.dcm", np.zeros((5, 8), np.uint16), "MONOCHROME2", SeriesInstanceUID="1.2.3.4",
                 ImageOrientationPatient=ORIENTATION, ImagePositionPatient=[-20.0, -30.0, 45.0], PixelSpacing=[0.6, 0.9])
    with pytest.raises(DataError, match=r"im001\.dcm: slice size \[5, 8\] differs from \[6, 8\] of the other 2 slice"):
        read_case(sizes)
    gaps = _series(tmp_path / "gaps", n=4, override={3: {"ImagePositionPatient": [-20.0, -30.0, 49.0]}})
    with pytest.raises(DataError, match=r"im001\.dcm: slice gap 4 mm differs from the series' 2\.5 mm"):
        read_case(gaps)
    pixel = _series(tmp_path / "pixel", n=3, override={1: {"PixelSpacing": [0.5, 0.9]}})
    with pytest.raises(DataError, match=r"im002\.dcm: pixel spacing \[0\.5, 0\.9\] differs from \[0\.6, 0\.9\]"):
        read_case(pixel)


def _second_series(folder: Path, n: int, uid: str = "1.2.3.5") -> None:
    """Another series (SeriesNumber 3) at the same positions, in the same folder."""
    for k in range(n):
        _write_dicom(folder / f"b{k:03d}.dcm", np.full((6, 8), 5, np.uint16), "MONOCHROME2", Modality="CT",
                     SeriesInstanceUID=uid, SeriesNumber=3, ImageOrientationPatient=ORIENTATION,
                     ImagePositionPatient=[-20.0, -30.0, 40.0 + 2.5 * k], PixelSpacing=[0.6, 0.9])


@pytest.mark.parametrize("stray", [0, 7], ids=["a-later-file", "the-first-file"])
def test_a_file_of_another_series_is_neither_merged_nor_read_as_pictures(ct_checkpoint: Path, tmp_path: Path,
                                                                         stray: int) -> None:
    # File im008 (slice 0) is the last by name, im001 (slice 7) the first.
    folder = _series(tmp_path / "ct01", n=8, override={stray: {"SeriesInstanceUID": "1.2.3.9"}})
    message = rf"ct01: holds 2 DICOM series \(1\.2\.3\.4: 7 file\(s\) .*1\.2\.3\.9: 1 file\(s\) from im00{8 - stray}\.dcm"
    with pytest.raises(DataError, match=message):
        case_stem(folder, "volume")
    with pytest.raises(DataError, match=message):
        read_case(folder)
    # Nor is it read as eight 2D cases (the folder's files as CT slice pictures).
    argv = ["--checkpoint", str(ct_checkpoint), "--input", str(folder), "--output", str(tmp_path / "out")]
    assert main(argv, command="infer") == 2


def test_two_series_in_one_folder_are_refused_naming_both(ct_checkpoint: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    folder = _series(tmp_path / "in" / "ct01", n=10)
    _second_series(folder, 10)
    argv = ["--checkpoint", str(ct_checkpoint), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    assert main(argv, command="infer") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds 2 DICOM series" in err
    assert "1.2.3.4: 10 file(s)" in err and "1.2.3.5 (series number 3): 10 file(s) from b000.dcm" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # Each series in a folder of its own: two cases, named by their folders.
    (tmp_path / "in" / "ct01_s3").mkdir()
    for f in folder.glob("b*.dcm"):
        f.rename(tmp_path / "in" / "ct01_s3" / f.name)
    assert [case_stem(tmp_path / "in" / c, "volume") for c in ("ct01", "ct01_s3")] == ["ct01", "ct01_s3"]
    assert read_case(tmp_path / "in" / "ct01").shape == read_case(tmp_path / "in" / "ct01_s3").shape == (8, 6, 10)


def test_a_folder_of_single_dicom_pictures_is_not_a_series(tmp_path: Path) -> None:
    (tmp_path / "xr").mkdir()
    for k in range(3):  # X-rays: one series each, no slice position
        _write_dicom(tmp_path / "xr" / f"x{k}.dcm", np.zeros((6, 8), np.uint16), "MONOCHROME2",
                     SeriesInstanceUID=f"1.2.9.{k}")
    assert case_stem(tmp_path / "xr", "volume") is None
    assert [case_stem(p, "image") for p in sorted((tmp_path / "xr").iterdir())] == ["x0", "x1", "x2"]


def test_unknown_format_names_the_file_and_the_supported_suffixes(tmp_path: Path) -> None:
    (tmp_path / "scan.xyz").write_bytes(b"?")
    with pytest.raises(DataError) as err:
        read_case(tmp_path / "scan.xyz")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'scan.xyz'}: unknown format; supported:")
    assert all(s in message for f in FORMATS for s in f.suffixes) and "DICOM series" in message
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), AFFINE), str(tmp_path / "v.nii.gz"))
    with pytest.raises(DataError, match=r"v\.nii\.gz is a nifti volume, but this model was trained on 2D images"):
        read_case(tmp_path / "v.nii.gz", "image")


# ------------------------------------------------------------------------- infer.py end to end
@pytest.fixture(scope="module")
def ct_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained) CNN checkpoint of a CT model with the lung window."""
    cfg = config_from_dict({"data": {"kind": "volume", "labels": ["infection"], "image_size": 64,
                                     "window": {"preset": "lung"}},
                            "model": {"arch": "unet"}, "seed": 0})
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    atomic_save(model_payload(create_model_from_config(cfg), cfg, 0.5, {}), path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_infer_segments_a_ct_slice_picture(ct_checkpoint: Path, tmp_path: Path, suffix: str) -> None:
    Image.fromarray(np.full((40, 24), 90, np.uint8)).save(tmp_path / f"slice{suffix}")
    argv = ["--checkpoint", str(ct_checkpoint), "--input", str(tmp_path / f"slice{suffix}"), "--output", str(tmp_path / "out")]
    assert main(argv, command="infer") == 0
    pred = np.asarray(Image.open(tmp_path / "out" / "slice_pred.png"))
    assert pred.shape == (40, 24) and set(np.unique(pred)) <= {0, 255}


def test_infer_segments_a_dicom_series_into_nifti_with_its_geometry(ct_checkpoint: Path, tmp_path: Path) -> None:
    folder = _series(tmp_path / "ct01", n=3, rows=40, cols=24)
    argv = ["--checkpoint", str(ct_checkpoint), "--input", str(folder), "--output", str(tmp_path / "out")]
    assert main(argv, command="infer") == 0
    written = nib.load(str(tmp_path / "out" / "ct01_pred.nii.gz"))
    assert written.shape == (24, 40, 3)
    assert np.allclose(written.affine, read_case(folder, reorient=False).original_affine)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}


class _NpyPicture(PictureFormat):
    """A 2D format added as docs/extending.md says: one class (here with its own mask rule)."""

    name = "npy"
    suffixes = (".npy",)

    def read_seg(self, path: Path, reorient: object, mask_threshold: float, label_map: bool) -> np.ndarray:
        values = np.load(path)
        return values.astype(np.int64) if label_map else values > mask_threshold * values.max()


def test_masks_are_read_by_the_format_that_claims_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "FORMATS", (_NpyPicture(), *FORMATS))
    np.save(tmp_path / "m.npy", np.array([[0, 1], [2, 4]]))
    assert read_labels(tmp_path / "m.npy", True, 0.5, label_map=False).tolist() == [[False, False], [False, True]]
    assert read_labels(tmp_path / "m.npy", True, 0.5, label_map=True).tolist() == [[0, 1], [2, 4]]
    # The built-in formats keep their rules: a picture by read_mask, a volume by its served array.
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "m.png")
    assert read_labels(tmp_path / "m.png", True, 0.5, label_map=False).tolist() == [[False, True]]
    nib.save(nib.Nifti1Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4)), tmp_path / "m.nii.gz")
    assert read_labels(tmp_path / "m.nii.gz", False, 0.5, label_map=True).tolist() == np.arange(8).reshape(2, 2, 2).tolist()
    with pytest.raises(DataError, match=r"gone.png: file not found$"):
        read_labels(tmp_path / "gone.png", True, 0.5, label_map=False)


def test_a_case_answers_what_callers_used_to_branch_on(tmp_path: Path) -> None:
    # Callers ask the CaseImage instead of testing whether it is a 2D picture.
    Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3)).save(tmp_path / "p.png")
    picture = read_case(tmp_path / "p.png")
    assert picture.pixels().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert picture.slice_axis(2) is None and picture.in_plane_spacing(2) is None and picture.orientation_codes is None
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4), np.int16), np.diag([-0.5, -0.7, 2.0, 1.0])), tmp_path / "v.nii.gz")
    volume = read_case(tmp_path / "v.nii.gz")
    assert volume.pixels().shape == (2, 3, 4) and volume.slice_axis(2) == 2
    assert volume.in_plane_spacing(2) == pytest.approx((0.5, 0.7)) and volume.orientation_codes == "LPI"  # as served
