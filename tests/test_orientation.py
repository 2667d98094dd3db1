"""The orientation convention (s2unet.io.case.ORIENTATION): one anatomy-like scan stored as NIfTI
in several orientations, MHA, an LPS-tagged DICOM series and a PNG of its displayed slice is
served, fed to the model and predicted the same way, and predictions go back in each file's own
geometry; sagittal and coronal slicing; checkpoints written before the convention."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, get_args, get_type_hints

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from PIL import Image

from s2unet.cli import main
from s2unet.config import Config, DataConfig, config_from_dict
from s2unet.data import read_case
from s2unet.io.case import LEGACY_ORIENTATION, ORIENTATION, SERVED_AXCODES
from s2unet.models import create_model_from_config
from s2unet.models.base import SegmentationModel
from s2unet.models.checkpoint import (
    FORMAT_VERSION,
    LegacyOrientationWarning,
    atomic_save,
    load_model_checkpoint,
    model_payload,
    read_checkpoint,
)
from s2unet.predict import Predictor
from test_data_readers import _write_dicom

# The scan in the convention's index space: axis 0 runs to the patient's Left, 1 Posterior,
# 2 Inferior (slice 0 is the top one), so ``SCAN[:, :, k].T`` is the axial picture a radiologist sees.
NX, NY, NZ = 48, 40, 6
SPACING = (0.8, 0.7, 2.5)
DISPLAYED_SLICE = 1  # the slice also given as a PNG
SPINE, MARKER, STERNUM = 255, 200, 180


def _scan() -> np.ndarray:
    x, y = np.meshgrid(np.arange(NX), np.arange(NY), indexing="ij")
    vol = np.zeros((NX, NY, NZ), np.uint8)  # air 0: every slice spans 0..255 (see _cfg's window)
    for k in range(NZ):
        plane = vol[:, :, k]
        plane[((x - 24) / 20) ** 2 + ((y - 20) / 15) ** 2 <= 1] = 100 + 10 * k  # the body, slice by slice
        plane[(x - 24) ** 2 + (y - 31) ** 2 <= 16] = SPINE  # posterior
        if k <= 2:  # the upper slices only: superior shows at the top of sagittal/coronal slices
            plane[6:11, 16:23] = MARKER  # the patient's right (low x)
            plane[22:27, 7:10] = STERNUM  # anterior (low y)
    return vol


SCAN = _scan()
# Voxel-to-RAS affine of SCAN: its axes point L, P, I.
SCAN_AFFINE = np.diag([-SPACING[0], -SPACING[1], -SPACING[2], 1.0])
SCAN_AFFINE[:3, 3] = (30.0, 20.0, 50.0)


def _nifti(path: Path, axcodes: str) -> Path:
    """SCAN stored with its voxel axes along ``axcodes`` (nibabel's own reorientation)."""
    scan = nib.Nifti1Image(SCAN, SCAN_AFFINE)
    ornt = nib.orientations.ornt_transform(nib.io_orientation(SCAN_AFFINE), nib.orientations.axcodes2ornt(axcodes))
    stored = scan.as_reoriented(ornt)
    assert nib.aff2axcodes(stored.affine) == tuple(axcodes)
    nib.save(stored, str(path))
    return path


def _lps_world() -> tuple[np.ndarray, tuple[float, float, float]]:
    """SCAN as an LPS-ordered array (slices from the feet up) and the LPS position of voxel 0."""
    lps = SCAN[:, :, ::-1]
    corner = SCAN_AFFINE @ np.array([0.0, 0.0, NZ - 1.0, 1.0])  # the lowest slice, RAS
    return lps, (-corner[0], -corner[1], corner[2])


def _mha(path: Path) -> Path:
    lps, origin = _lps_world()
    itk = sitk.GetImageFromArray(np.ascontiguousarray(lps.transpose(2, 1, 0)))  # ITK numpy order (z, y, x)
    itk.SetSpacing(SPACING)
    itk.SetOrigin(origin)
    itk.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))  # LPS
    sitk.WriteImage(itk, str(path))
    return path


def _dicom_series(folder: Path) -> Path:
    """The standard tagging: ImageOrientationPatient 1,0,0,0,1,0 (rows run to the patient's left,
    columns to the back), stored values + 1024 with RescaleIntercept -1024; file names run
    against the positions."""
    folder.mkdir(parents=True)
    lps, origin = _lps_world()
    for k in range(NZ):
        pixels = lps[:, :, k].T.astype(np.uint16) + 1024  # (rows, columns)
        position = [origin[0], origin[1], origin[2] + SPACING[2] * k]
        _write_dicom(folder / f"im{NZ - k:03d}.dcm", pixels, "MONOCHROME2", slope=1.0, intercept=-1024.0,
                     Modality="CT", SeriesInstanceUID="1.2.826.0.1.22", ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                     ImagePositionPatient=position, PixelSpacing=[SPACING[1], SPACING[0]])
    return folder


def write_scans(folder: Path) -> dict[str, Path]:
    """SCAN in every stored form: name -> path (the PNG holds slice DISPLAYED_SLICE)."""
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / "slice.png"
    Image.fromarray(SCAN[:, :, DISPLAYED_SLICE].T).save(png)
    return {"nifti_ras": _nifti(folder / "ras.nii.gz", "RAS"), "nifti_lps": _nifti(folder / "lps.nii.gz", "LPS"),
            "nifti_permuted": _nifti(folder / "permuted.nii.gz", "ASR"), "mha": _mha(folder / "ct.mha"),
            "dicom_series": _dicom_series(folder / "series"), "png": png}


VOLUMES = ("nifti_ras", "nifti_lps", "nifti_permuted", "mha", "dicom_series")


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_scans(tmp_path_factory.mktemp("scans"))


def test_the_scan_is_anatomy_the_right_way_up() -> None:
    picture = SCAN[:, :, 0].T  # the convention's axial picture
    rows, cols = np.nonzero(picture == SPINE)
    assert rows.mean() > NY / 2  # the spine (posterior) in the bottom half
    rows, cols = np.nonzero(picture == MARKER)
    assert cols.mean() < NX / 2  # the patient's right on the image's left


@pytest.mark.parametrize("name", VOLUMES)
def test_every_stored_form_is_served_in_the_convention(scans: dict[str, Path], name: str) -> None:
    case = read_case(scans[name], "volume", True)
    assert case.orientation == ORIENTATION and case.axcodes == SERVED_AXCODES[ORIENTATION] == ("L", "P", "I")
    np.testing.assert_array_equal(case.get_array(), SCAN)
    np.testing.assert_allclose(case.zooms, SPACING, rtol=1e-5)
    for axis in range(3):
        np.testing.assert_array_equal(case.get_slice(2, axis), np.take(SCAN, 2, axis))


def test_a_picture_is_taken_as_displayed(scans: dict[str, Path]) -> None:
    case = read_case(scans["png"], "volume", True)
    assert case.orientation is None
    np.testing.assert_array_equal(case.picture(), SCAN[:, :, DISPLAYED_SLICE].T)
    np.testing.assert_array_equal(case.get_array()[:, :, 0], SCAN[:, :, DISPLAYED_SLICE])


class _Recording(SegmentationModel):
    """A fixed, left-right and up-down asymmetric filter; remembers every input it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = torch.nn.Parameter(torch.linspace(-1.0, 2.0, 9).reshape(1, 1, 3, 3))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.inputs.append(x.detach().clone())
        logits = F.conv2d(x[:, :1], self.kernel, padding=1) - 0.6
        return [logits, logits, logits]


def _cfg(axis: int = 2, orientation: str = ORIENTATION) -> Config:
    # window none: uint8 scaled by 255, float (the DICOM series) by its 0..255 range: the same numbers
    return config_from_dict({"data": {"kind": "volume", "image_size": 32, "axis": axis, "window": {"preset": "none"},
                                      "orientation": orientation}})


def _predict(path: Path, cfg: Config) -> tuple[np.ndarray, torch.Tensor]:
    """The Predictor's probabilities of a file (served frame) and the model inputs it built."""
    model = _Recording()
    predictor = Predictor(model, cfg, "cpu", 0.5)
    case = read_case(path, cfg.data.kind, cfg.data.served)
    prob = predictor.predict_picture(case) if case.planar else predictor.predict_volume(case)
    return prob, torch.cat(model.inputs)


@pytest.mark.parametrize("axis", [2, 0, 1])
def test_every_stored_form_gives_the_same_model_input_and_prediction(scans: dict[str, Path], axis: int) -> None:
    cfg = _cfg(axis)
    reference_prob, reference_input = _predict(scans["nifti_ras"], cfg)
    for name in VOLUMES[1:]:
        prob, inputs = _predict(scans[name], cfg)
        torch.testing.assert_close(inputs, reference_input, rtol=0, atol=1e-6, msg=name)
        np.testing.assert_allclose(prob, reference_prob, rtol=0, atol=1e-6, err_msg=name)
    if axis == 2:  # the PNG is one axial slice, as displayed
        prob, inputs = _predict(scans["png"], cfg)
        torch.testing.assert_close(inputs[0], reference_input[DISPLAYED_SLICE], rtol=0, atol=1e-6)
        np.testing.assert_allclose(prob, reference_prob[:, :, :, DISPLAYED_SLICE].transpose(0, 2, 1), atol=1e-6)
    assert 0.05 < float((reference_prob > 0.5).mean()) < 0.95  # an informative prediction


@pytest.mark.parametrize("axis, feature, where", [
    (0, STERNUM, "superior at the top, anterior on the left"),
    (1, MARKER, "superior at the top, the patient's right on the left"),
])
def test_sagittal_and_coronal_slices_are_shown_as_in_slicer(scans: dict[str, Path], axis: int, feature: int,
                                                            where: str) -> None:
    k = 24 if axis == 0 else 19  # through the sternum / through the right-side marker
    for name in VOLUMES:
        picture = read_case(scans[name], "volume", True).get_slice(k, axis).T
        rows, cols = np.nonzero(picture == feature)
        assert rows.size and rows.max() < NZ / 2, (name, where)  # only in the upper slices: at the top
        assert cols.mean() < picture.shape[1] / 2, (name, where)


def _checkpoint(path: Path, cfg: Config, threshold: float = 0.5, version: Optional[int] = None) -> Path:
    payload = model_payload(create_model_from_config(cfg), cfg, threshold, {})
    if version is not None:  # as written before the convention: no data.orientation
        payload["format_version"] = version
        del payload["config"]["data"]["orientation"]
    atomic_save(payload, path)
    return path


def test_infer_writes_each_prediction_back_in_its_own_geometry(scans: dict[str, Path], tmp_path: Path) -> None:
    cfg = config_from_dict({**_cfg().to_dict(), "model": {"arch": "unet"}, "seed": 0})
    ckpt = _checkpoint(tmp_path / "best.pt", cfg)
    inputs = [str(scans[n]) for n in (*VOLUMES, "png")]
    argv = ["--checkpoint", str(ckpt), "--input", *inputs, "--output", str(tmp_path / "out"), "--probabilities",
            "--no-postprocess"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", LegacyOrientationWarning)  # a current checkpoint does not warn
        assert main(argv, command="infer") == 0
    out = tmp_path / "out"
    probs = {}
    for name, stem, suffix in (("nifti_ras", "ras", ".nii.gz"), ("nifti_lps", "lps", ".nii.gz"),
                               ("nifti_permuted", "permuted", ".nii.gz"), ("mha", "ct", ".mha"),
                               ("dicom_series", "series", ".nii.gz")):
        written = read_case(out / f"{stem}_prob{suffix}", "volume", False)
        source = read_case(scans[name], "volume", False)
        assert written.original_shape == source.original_shape, name
        np.testing.assert_allclose(written.original_affine, source.original_affine, atol=1e-4, err_msg=name)
        probs[name] = read_case(out / f"{stem}_prob{suffix}", "volume", True).get_array()
    for name in VOLUMES[1:]:
        np.testing.assert_allclose(probs[name], probs["nifti_ras"], atol=1e-6, err_msg=name)
    picture = np.asarray(Image.open(out / "slice_prob.png")).astype(np.float32) / 255
    np.testing.assert_allclose(picture, probs["nifti_ras"][:, :, DISPLAYED_SLICE].T, atol=1 / 255 + 1e-6)
    assert probs["nifti_ras"].std() > 0


def test_the_orientation_names_agree_with_the_config() -> None:
    assert set(get_args(get_type_hints(DataConfig)["orientation"])) == set(SERVED_AXCODES)
    assert DataConfig().orientation == ORIENTATION and DataConfig(reorient=False).served is False


def test_a_volume_checkpoint_from_before_the_convention_predicts_as_before_and_warns(
        scans: dict[str, Path], tmp_path: Path) -> None:
    cfg = config_from_dict({**_cfg().to_dict(), "model": {"arch": "unet"}, "seed": 0})
    path = _checkpoint(tmp_path / "old.pt", cfg, version=2)
    assert read_checkpoint(path)["config"]["data"]["orientation"] == LEGACY_ORIENTATION
    with pytest.warns(LegacyOrientationWarning, match=r"old\.pt was trained before the orientation convention .*"
                                                      r"retrain it"):
        loaded = load_model_checkpoint(path)
    assert loaded.config.data.orientation == LEGACY_ORIENTATION
    predictor = Predictor(loaded.model, loaded.config, "cpu", loaded.threshold)
    # What s2unet did before: slice the closest-RAS array
    before = predictor.predict_volume(np.asanyarray(nib.as_closest_canonical(nib.load(str(scans["nifti_lps"]))).dataobj))
    case = read_case(scans["nifti_lps"], "volume", loaded.config.data.served)
    assert case.axcodes == ("R", "A", "S")
    np.testing.assert_array_equal(predictor.predict_volume(case), before)
    # what infer's overlay shows of it: the convention's view
    np.testing.assert_array_equal(case.to_convention(case.get_array()), SCAN)
    stacked = case.to_convention(np.stack([case.get_array(), case.get_array()]))
    assert stacked.shape == (2, *SCAN.shape) and np.array_equal(stacked[1], SCAN)


def test_image_checkpoints_from_before_the_convention_are_unchanged(tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"kind": "image", "image_size": 32}, "model": {"arch": "unet"}, "seed": 0})
    path = _checkpoint(tmp_path / "xray.pt", cfg, version=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LegacyOrientationWarning)
        loaded = load_model_checkpoint(path)
    assert loaded.config.data.orientation == ORIENTATION and FORMAT_VERSION == 3


@pytest.mark.shared
def test_the_two_shared_ct_sources_are_served_the_same_way_up(shared_dir: Path) -> None:
    """With the corrected headers both sources are served anterior-up: the bright spine lies in the
    bottom half of each case's mean slice, and the mean coronacases slice matches the mean
    radiopaedia slice better than its vertical flip (measured: 0.85 against 0.71; as stored, the
    radiopaedia spine sits at 0.26-0.37 of the height)."""
    from scipy.ndimage import label, zoom

    def mean_body_slice(case: str) -> np.ndarray:
        vol = read_case(shared_dir / "data" / "ct_covid19_ma20" / "images" / f"{case}.nii.gz", "volume", True)
        picture = vol.get_array().astype(np.float32).mean(axis=2).T
        parts, _ = label(picture > picture.mean())
        body = parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1
        rows, cols = np.flatnonzero(body.any(1)), np.flatnonzero(body.any(0))
        crop = picture[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]  # the body's box: fields of view differ
        return zoom(crop, (64 / crop.shape[0], 64 / crop.shape[1]), order=1)

    groups = {"coronacases": [f"case{i:02d}" for i in range(10)], "radiopaedia": [f"case{i:02d}" for i in range(10, 18)]}
    means = {}
    for group, cases in groups.items():
        slices = [mean_body_slice(c) for c in cases]
        for case, picture in zip(cases, slices):
            centre = picture[:, 21:43]
            spine_rows = np.nonzero(centre >= np.quantile(centre, 0.97))[0]
            assert spine_rows.mean() / 64 > 0.55, case
        means[group] = np.mean(slices, axis=0)
    a, b = means["coronacases"].ravel(), means["radiopaedia"]
    assert np.corrcoef(a, b.ravel())[0, 1] > np.corrcoef(a, b[::-1].ravel())[0, 1] + 0.1


@pytest.mark.parametrize("cosines, warns", [
    (None, False),  # no geometry: taken as displayed
    ([1, 0, 0, 0, 1, 0], False),  # axial as displayed
    ([1, 0, 0, 0, 0, -1], False),  # coronal as displayed
    ([-1, 0, 0, 0, -1, 0], True),  # axial rotated by 180 degrees
    ([0, 1, 0, 1, 0, 0], True),  # axial transposed
])
def test_a_2d_dicom_slice_tagged_otherwise_than_displayed_warns(tmp_path: Path, cosines: Optional[list],
                                                                warns: bool) -> None:
    tags = {} if cosines is None else {"ImageOrientationPatient": cosines}
    pixels = SCAN[:, :, 0].T.astype(np.uint16) + 1024
    _write_dicom(tmp_path / "slice.dcm", pixels, "MONOCHROME2", slope=1.0, intercept=-1024.0, Modality="CT", **tags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        case = read_case(tmp_path / "slice.dcm", "volume", True)
    np.testing.assert_array_equal(case.picture(), SCAN[:, :, 0].T)  # taken as stored either way
    said = [str(w.message) for w in caught if "ImageOrientationPatient" in str(w.message)]
    assert len(said) == int(warns)
    if warns:
        assert "slice.dcm" in said[0] and "rotated or mirrored" in said[0]
