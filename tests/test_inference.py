"""Inference: geometry kept on write, post-processing, reports, overlays, refusals, end to end.

Most run tests replace the checkpoint loader with a tiny deterministic model (logits from the
input intensity), so predictions are known exactly and the tests take milliseconds; one test
runs a real random-weight Hiera-T checkpoint end to end.
"""
from __future__ import annotations

import csv
import errno
import gzip
import importlib
import json
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from s2unet.cli import main
from s2unet.config import Config, ConfigError, config_from_dict
from s2unet.data import DataError, load_nifti
from s2unet.inference import (
    Predictor,
    binarize,
    case_report,
    evaluate,
    pick_slices,
    postprocess,
    InferenceOptions,
    run_inference,
    volume_overlay,
)
from s2unet.cli import main
from s2unet.inference import run as run_module
from s2unet.inference.segment import check_flip_symmetric
from s2unet.models.base import SegmentationModel
from s2unet.models.checkpoint import LoadedModel, atomic_save, model_payload
from s2unet.weights import CheckpointError

evaluate_module = importlib.import_module("s2unet.inference.evaluate")  # the package exports a function of that name

# Permuted, flipped axes with non-unit spacing and an offset: anything but the identity.
AFFINE = np.array([[0.0, -0.8, 0.0, 10.0], [0.7, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]])
SHAPE = (64, 64, 6)


class ThresholdModel(SegmentationModel):
    """Channel c's logit is ``sign_c * 20 * (centre input channel - cut_c)``: a known prediction."""

    def __init__(self, cuts: list[float], signs: list[float]) -> None:
        super().__init__()
        self.register_buffer("cuts", torch.tensor(cuts).view(1, -1, 1, 1))
        self.register_buffer("signs", torch.tensor(signs).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = self.signs * 20.0 * (x[:, 1:2] - self.cuts)
        return [logits, logits, logits]


def _volume_cfg(**data: object) -> Config:
    return config_from_dict({"data": {"kind": "volume", "image_size": 64, "labels": ["infection"], **data}})


def _use_model(monkeypatch: pytest.MonkeyPatch, cfg: Config, model: SegmentationModel) -> None:
    def fake_loader(path: object, device: object) -> LoadedModel:
        return LoadedModel(model, cfg, 0.5, {})

    monkeypatch.setattr(run_module, "load_model_checkpoint", fake_loader)


def _save(array: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


@pytest.fixture()
def ct_case(tmp_path: Path) -> dict[str, Path]:
    """One synthetic CT case: a bright 3D blob plus a bright single voxel, GT, and a lung mask."""
    image = np.full(SHAPE, 40, np.uint8)
    image[10:30, 20:40, 1:5] = 200  # 20 x 20 x 4 blob -> predicted
    image[50, 50, 2] = 220  # a one-voxel speck -> removed by min_size
    gt = np.zeros(SHAPE, np.uint8)
    gt[10:30, 20:40, 1:4] = 1
    lung = np.zeros(SHAPE, np.uint8)
    lung[5:60, 5:60, :] = 1
    lung[10:30, 20:30, :] = 0  # half the blob lies outside the lungs
    return {
        "image": _save(image, tmp_path / "in" / "case01.nii.gz"),
        "gt": _save(gt, tmp_path / "gt" / "case01.nii.gz"),
        "lung": _save(lung, tmp_path / "lung" / "case01.nii.gz"),
    }


# ------------------------------------------------------------------------------------ predictor
def test_predictor_streams_slices_in_served_orientation(ct_case: dict[str, Path]) -> None:
    cfg = _volume_cfg(context_slices=True)
    vol = load_nifti(ct_case["image"], reorient=True)
    assert vol.shape != SHAPE or not np.allclose(vol.affine, AFFINE)  # really reoriented
    done: list[int] = []
    predictor = Predictor(ThresholdModel([0.5], [1.0]), cfg, "cpu", batch_size=4, tta_flip=True)
    prob = predictor.predict_volume(vol, progress=done.append)
    assert prob.shape == (1, *vol.shape) and prob.dtype == np.float32
    assert done == [4, 2]
    np.testing.assert_array_equal(predictor.binarize(prob)[0], vol.get_array() >= 128)


def test_predict_image_returns_native_size() -> None:
    cfg = config_from_dict({"data": {"kind": "image", "image_size": 64}})
    image = np.zeros((50, 70), np.float32)
    image[10:40, 20:50] = 1.0
    prob = Predictor(ThresholdModel([0.5], [1.0]), cfg).predict_image(image)
    assert prob.shape == (1, 50, 70)
    assert prob[0, 25, 35] > 0.99 and prob[0, 2, 2] < 0.01


def test_binarize_multiclass_gives_foreground_channels() -> None:
    prob = np.zeros((3, 2, 2), np.float32)
    prob[0, 0, 0] = prob[1, 0, 1] = prob[2, 1, :] = 1.0
    masks = binarize(prob, 0.5, "multiclass")
    assert masks.shape == (2, 2, 2)
    np.testing.assert_array_equal(masks[0], [[False, True], [False, False]])
    np.testing.assert_array_equal(masks[1], [[False, False], [True, True]])


# ------------------------------------------------------------------------ post-process, report
def test_postprocess_removes_small_and_outside_region() -> None:
    mask = np.zeros((1, 10, 10, 4), bool)
    mask[0, 1:5, 1:5, 1:3] = True  # 32 voxels
    mask[0, 8, 8, 0] = True  # 1 voxel
    mask[0, 6:8, 6:8, 3] = True  # 4 voxels, outside the region below
    region = np.ones((10, 10, 4), bool)
    region[6:8, 6:8, :] = False
    region[1:5, 1:3, :] = False  # cuts 16 voxels off the big component
    out = postprocess(mask, min_size=5, region=region)
    assert out.sum() == 16 and not out[0, 8, 8, 0] and not out[0, 6:8, 6:8].any()
    assert postprocess(mask, min_size=0).sum() == mask.sum()


def test_report_volume_in_ml_from_spacing() -> None:
    mask = np.zeros((1, 4, 4, 5), bool)
    mask[0, :2, :, 1] = True  # 8 voxels on slice 1
    mask[0, 0, :2, 3] = True  # 2 voxels on slice 3
    lung = np.zeros((4, 4, 5), bool)
    lung[:, :, 1:4] = True  # 48 voxels
    report = case_report("c", mask, ["infection"], spacing=(0.5, 2.0, 3.0), lung=lung, slice_axis=2)
    assert report["voxels"] == 10
    assert report["volume_ml"] == pytest.approx(10 * 0.5 * 2.0 * 3.0 / 1000)  # 0.03 mL
    assert report["lung_volume_ml"] == pytest.approx(48 * 3.0 / 1000)
    assert report["percent_of_lung"] == pytest.approx(100 * 10 / 48)
    assert report["slices_with_foreground"] == 2



def test_volumes_of_placeholder_or_absurd_spacing_are_relative_and_absurd_spacing_warns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use_model(monkeypatch, _volume_cfg(), ThresholdModel([0.5], [1.0]))
    image = np.full(SHAPE, 40, np.uint8)
    image[10:30, 20:40, 1:5] = 200
    for name, zoom in (("real", 0.7), ("unknown", 1.0), ("tiny", 1e-6), ("huge", 1e6)):
        _save(image, tmp_path / "in" / f"{name}.nii.gz", np.diag([zoom, zoom, zoom, 1.0]))
    with pytest.warns(UserWarning) as caught:
        run_inference("fake.pt", tmp_path / "in", tmp_path / "out", InferenceOptions(show_progress=False))
    loud = sorted({str(w.message) for w in caught if "plausible" in str(w.message)})  # read to check, then to segment
    assert len(loud) == 2 and "huge.nii.gz: spacing 1e+06x1e+06x1e+06 mm is outside the plausible 0.01..50 mm" in loud[0]
    assert "tiny.nii.gz: spacing 1e-06x1e-06x1e-06 mm" in loud[1]
    reports = {n: json.loads((tmp_path / "out" / f"{n}_report.json").read_text()) for n in ("real", "unknown", "tiny", "huge")}
    assert reports["real"]["volume_units"] == "mL" and "volume_caveat" not in reports["real"]
    assert reports["unknown"]["volume_units"] == "relative" and "placeholder" in reports["unknown"]["volume_caveat"]
    assert all(reports[n]["volume_units"] == "relative" and "plausible" in reports[n]["volume_caveat"] for n in ("tiny", "huge"))

def test_overlay_is_a_png(tmp_path: Path) -> None:
    pred = np.zeros((1, 16, 16, 20), bool)
    pred[0, 4:8, 4:8, 2:5] = True
    gt = np.roll(pred, 1, axis=1)
    assert pick_slices(pred, gt, axis=2, n=4) == [0, 2, 3, 4]  # the 3 with foreground, then spread
    shown = volume_overlay(tmp_path / "o.png", np.random.rand(16, 16, 20), pred, gt, axis=2, n_slices=12)
    assert len(shown) == 12 and {2, 3, 4} <= set(shown)
    data = (tmp_path / "o.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(tmp_path / "o.png") as im:
        im.verify()
    assert not list(tmp_path.glob(".tmp*"))


# ------------------------------------------------------------------------------------- run
def test_run_keeps_geometry_and_postprocesses(
    monkeypatch: pytest.MonkeyPatch, ct_case: dict[str, Path], tmp_path: Path
) -> None:
    cfg = _volume_cfg(context_slices=True)
    _use_model(monkeypatch, cfg, ThresholdModel([0.5], [1.0]))
    out = tmp_path / "out"
    summary = run_inference(
        "fake.pt", ct_case["image"].parent, out,
        InferenceOptions(gt=ct_case["gt"].parent, lung=ct_case["lung"].parent, probabilities=True, min_size=5,
                         show_progress=False),
    )
    src = nib.load(str(ct_case["image"]))
    written = nib.load(str(out / "case01_pred.nii.gz"))
    assert written.shape == src.shape
    np.testing.assert_allclose(written.affine, src.affine, atol=1e-6)
    np.testing.assert_allclose(written.header.get_zooms(), src.header.get_zooms())
    assert written.get_data_dtype() == np.uint8
    expected = np.zeros(SHAPE, np.uint8)
    expected[10:30, 30:40, 1:5] = 1  # the blob inside the lungs; the speck is gone
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)
    prob = nib.load(str(out / "case01_prob.nii.gz"))
    assert prob.get_data_dtype() == np.float32 and prob.shape == src.shape

    report = json.loads((out / "case01_report.json").read_text())
    voxel_ml = 0.8 * 0.7 * 2.5 / 1000
    assert report["voxels"] == 20 * 10 * 4
    assert report["volume_ml"] == pytest.approx(800 * voxel_ml)
    assert report["slices_with_foreground"] == 4
    # pooled over the case: 800 predicted, 1200 GT, 600 overlap
    assert summary["metrics"]["case_mean"]["dice"] == pytest.approx(2 * 600 / (800 + 1200))
    assert summary["slices_per_second"] > 0 and summary["n_slices"] == 6
    for name in ("metrics_per_case.csv", "metrics_per_slice.csv", "summary.json", "reports.csv", "case01_overlay.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".tmp*"))

    again = evaluate(out, ct_case["gt"].parent, tmp_path / "eval")
    assert again["metrics"]["case_mean"] == pytest.approx(summary["metrics"]["case_mean"])
    assert (tmp_path / "eval" / "evaluation_per_slice.csv").is_file()

    with pytest.raises(DataError, match="already holds results.*--overwrite") as err:
        run_inference("fake.pt", ct_case["image"], out, InferenceOptions(show_progress=False))
    assert str(out) in str(err.value)
    run_inference("fake.pt", ct_case["image"], out, InferenceOptions(overwrite=True, show_progress=False))


def test_run_multilabel_images_and_evaluate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"kind": "image", "task": "multilabel", "image_size": 64,
                                     "labels": ["masks/lungs", "masks/heart"]}})
    _use_model(monkeypatch, cfg, ThresholdModel([0.5, 0.25], [1.0, -1.0]))  # bright / dark
    image = np.full((64, 64), 100, np.uint8)
    image[:20] = 255
    image[40:] = 0
    (tmp_path / "in").mkdir()
    # Two cases, the second upside down, so each output must come from its own input (the next
    # case is decoded while the current one is predicted).
    Image.fromarray(image).save(tmp_path / "in" / "JPC001.png")
    Image.fromarray(image[::-1]).save(tmp_path / "in" / "JPC002.png")
    for label, rows in (("lungs", slice(0, 20)), ("heart", slice(40, 50))):
        gt = np.zeros((64, 64), np.uint8)
        gt[rows] = 255
        (tmp_path / "gt" / label).mkdir(parents=True)
        Image.fromarray(gt).save(tmp_path / "gt" / label / "JPC001.png")
        Image.fromarray(gt[::-1]).save(tmp_path / "gt" / label / "JPC002.png")
    summary = run_inference("fake.pt", tmp_path / "in", tmp_path / "out", InferenceOptions(gt=tmp_path / "gt", show_progress=False))
    lungs = np.asarray(Image.open(tmp_path / "out" / "JPC001_pred_lungs.png"))
    assert lungs.shape == (64, 64) and set(np.unique(lungs)) == {0, 255}
    flipped = np.asarray(Image.open(tmp_path / "out" / "JPC002_pred_lungs.png"))
    assert np.array_equal(flipped, lungs[::-1]) and summary["cases"] == ["JPC001", "JPC002"]
    means = summary["metrics"]["case_mean"]
    assert means["dice/lungs"] == 1.0 and means["dice/heart"] == pytest.approx(2 * 10 / (24 + 10))
    assert means["dice"] == pytest.approx((means["dice/lungs"] + means["dice/heart"]) / 2)
    assert evaluate(tmp_path / "out", tmp_path / "gt")["metrics"]["case_mean"] == pytest.approx(means)


# -------------------------------------------------------------------------------- refusals
def test_refuses_gt_with_other_geometry(monkeypatch: pytest.MonkeyPatch, ct_case: dict[str, Path], tmp_path: Path) -> None:
    _use_model(monkeypatch, _volume_cfg(), ThresholdModel([0.5], [1.0]))
    bad_gt = _save(np.zeros(SHAPE, np.uint8), tmp_path / "badgt" / "case01.nii.gz", affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(DataError, match="different affines") as err:
        run_inference("fake.pt", ct_case["image"], tmp_path / "out", InferenceOptions(gt=bad_gt.parent, show_progress=False))
    assert str(bad_gt) in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing written before validation passed


def test_refuses_gt_of_a_volume_labelled_on_some_slices(monkeypatch: pytest.MonkeyPatch, ct_case: dict[str, Path],
                                                        tmp_path: Path) -> None:
    _use_model(monkeypatch, _volume_cfg(), ThresholdModel([0.5], [1.0]))
    (tmp_path / "labelled_slices.json").write_text(json.dumps({"axis": 2, "reorient": True, "cases": {"case01": [2]}}))
    with pytest.raises(DataError, match=r"case01 is labelled on slices \[2\] only"):
        run_inference("fake.pt", ct_case["image"], tmp_path / "out", InferenceOptions(gt=ct_case["gt"].parent, show_progress=False))
    assert not (tmp_path / "out").exists()
    pred = _save(np.zeros(SHAPE, np.uint8), tmp_path / "pred" / "case01_pred.nii.gz")
    with pytest.raises(DataError, match="labelled_slices.json: case01 is labelled"):
        evaluate(pred.parent, ct_case["gt"].parent)


def test_refuses_unreadable_input_and_missing_gt(monkeypatch: pytest.MonkeyPatch, ct_case: dict[str, Path], tmp_path: Path) -> None:
    _use_model(monkeypatch, _volume_cfg(), ThresholdModel([0.5], [1.0]))
    folder = ct_case["image"].parent
    whole = gzip.decompress(ct_case["image"].read_bytes())
    truncated = folder / "case02.nii.gz"
    truncated.write_bytes(gzip.compress(whole[: len(whole) // 2]))  # header fine, data cut
    garbage = folder / "case03.nii.gz"
    garbage.write_bytes(b"not a nifti file")
    with pytest.raises(DataError) as err:
        run_inference("fake.pt", folder, tmp_path / "out", InferenceOptions(gt=ct_case["gt"].parent, show_progress=False))
    message = str(err.value)
    assert str(truncated) in message and str(garbage) in message
    assert "no volume file named case02" in message  # its GT is missing too


def test_refuses_flip_tta_for_left_and_right_labels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"kind": "image", "task": "multilabel", "image_size": 64,
                                     "labels": ["masks/heart", "masks/left_clavicle", "masks/right_clavicle"]}})
    _use_model(monkeypatch, cfg, ThresholdModel([0.5, 0.5, 0.5], [1.0, 1.0, 1.0]))
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "JPC001.png")
    with pytest.raises(DataError, match="left_clavicle, right_clavicle"):
        run_inference("fake.pt", tmp_path / "JPC001.png", tmp_path / "out", InferenceOptions(tta=True, show_progress=False))
    assert not (tmp_path / "out").exists()
    # Words that merely contain "right" are not sides.
    check_flip_symmetric(
        config_from_dict({"data": {"task": "multilabel", "labels": ["masks/lungs", "masks/brightness"]}}))


def test_refuses_input_of_the_wrong_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A volume model takes 2D CT slices (test_cross_source.py); an image model refuses volumes.
    _use_model(monkeypatch, config_from_dict({"data": {"kind": "image", "image_size": 64}}), ThresholdModel([0.5], [1.0]))
    volume = _save(np.zeros((8, 8, 2), np.uint8), tmp_path / "x.nii.gz")
    with pytest.raises(DataError, match="x.nii.gz is not one of the 2D images"):
        run_inference("fake.pt", volume, tmp_path / "out", InferenceOptions(show_progress=False))


def test_refuses_volume_with_nan_or_inf_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _use_model(monkeypatch, _volume_cfg(), ThresholdModel([0.5], [1.0]))
    image = np.full(SHAPE, 40.0, np.float32)
    image[3, 4, 1], image[5, 6, 2] = np.nan, np.inf
    bad = _save(image, tmp_path / "in" / "case01.nii.gz")
    with pytest.raises(DataError, match=f"{bad}: 2 NaN/inf values"):
        run_inference("fake.pt", bad, tmp_path / "out", InferenceOptions(show_progress=False))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"batch_size": 0}, "--batch-size must be >= 1, got 0"),
        ({"threshold": 2.0}, "--threshold must be in (0, 1), got 2.0"),
        ({"threshold": float("nan")}, "--threshold must be in (0, 1), got nan"),
        ({"threshold": 0.0}, "--threshold must be in (0, 1), got 0.0"),
        ({"min_size": -1}, "--min-size must be >= 0, got -1"),
        ({"device": "gpu"}, "--device 'gpu' is not a device; use auto, cpu, cuda or cuda:N"),
    ],
)
def test_refuses_bad_arguments_before_loading_anything(arguments: dict, message: str, tmp_path: Path) -> None:
    # The checkpoint does not exist: the argument must be refused before it is looked for.
    with pytest.raises(ConfigError) as err:
        run_inference(tmp_path / "missing.pt", tmp_path, tmp_path / "out", InferenceOptions(show_progress=False, **arguments))
    assert str(err.value) == message


def test_infer_cli_reports_a_bad_argument_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--checkpoint", str(tmp_path / "best.pt"), "--input", str(tmp_path), "--output", str(tmp_path / "out")]
    assert main([*argv, "--threshold", "nan"], command="infer") == 2
    assert capsys.readouterr().err == "error: --threshold must be in (0, 1), got nan\n"
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--threshold", "abc"], command="infer")
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "infer.py: error: argument --threshold: 'abc' is not a number; give one between 0 and 1, e.g. 0.5")


def test_refuses_checkpoint_that_is_not_s2unet(tmp_path: Path, ct_case: dict[str, Path]) -> None:
    foreign = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="not an s2unet checkpoint") as err:
        run_inference(foreign, ct_case["image"], tmp_path / "out", InferenceOptions(show_progress=False))
    assert str(foreign) in str(err.value)


# ------------------------------------------------------------------------------ end to end
def test_end_to_end_with_a_real_tiny_checkpoint(ct_case: dict[str, Path], tmp_path: Path) -> None:
    from s2unet.models import create_model_from_config

    cfg = config_from_dict({
        "model": {"encoder": "sam2.1_hiera_tiny", "weights": "random", "decoder_channels": [16, 16, 16]},
        "data": {"kind": "volume", "image_size": 64, "labels": ["infection"], "context_slices": True},
    })
    checkpoint = tmp_path / "best.pt"
    atomic_save(model_payload(create_model_from_config(cfg), cfg, 0.5, {"dice": 0.0}), checkpoint)
    summary = run_inference(checkpoint, ct_case["image"], tmp_path / "out",
                            InferenceOptions(gt=ct_case["gt"], surface=False, show_progress=False))
    written = nib.load(str(tmp_path / "out" / "case01_pred.nii.gz"))
    assert written.shape == SHAPE and np.allclose(written.affine, AFFINE)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}
    assert summary["n_slices"] == 6 and 0.0 <= summary["metrics"]["case_mean"]["dice"] <= 1.0


# ---------------------------------------------- outputs: overwrite, full disk, read-only, CSV
def _image_cases(root: Path, names: list[str]) -> tuple[Path, Path]:
    """Binary image cases (bright top rows) with their ground truth; returns (images, gt)."""
    image = np.full((64, 64), 40, np.uint8)
    image[:20] = 255
    gt = np.zeros((64, 64), np.uint8)
    gt[:24] = 255
    for folder, array in (("in", image), ("gt", gt)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.fromarray(array).save(root / folder / f"{name}.png")
    return root / "in", root / "gt"


def _use_image_model(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_from_dict({"data": {"kind": "image", "image_size": 64, "labels": ["masks"]}})
    _use_model(monkeypatch, cfg, ThresholdModel([0.5], [1.0]))


def test_evaluate_refuses_earlier_results_without_overwrite_and_escapes_case_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _use_image_model(monkeypatch)
    images, gt = _image_cases(tmp_path, ["=1+2", "@cmd", "case01"])  # case names from file names
    run_inference("fake.pt", images, tmp_path / "pred", InferenceOptions(show_progress=False))
    evaluate_cmd = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(gt), "--output", str(tmp_path / "ev")]
    assert main(evaluate_cmd) == 0
    with (tmp_path / "ev" / "evaluation_per_case.csv").open(newline="") as f:
        cases = [row["case"] for row in csv.DictReader(f)]
    assert cases == ["'=1+2", "'@cmd", "case01"]
    before = (tmp_path / "ev" / "evaluation_summary.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(evaluate_cmd) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds results (evaluation_per_case.csv" in err and "--overwrite" in err
    assert (tmp_path / "ev" / "evaluation_summary.json").stat().st_mtime_ns == before
    assert main([*evaluate_cmd, "--overwrite"]) == 0


def test_infer_on_a_full_disk_says_so_in_one_line_and_leaves_no_partial_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture, disk_full_at
) -> None:
    _use_image_model(monkeypatch)
    images, gt = _image_cases(tmp_path, ["case01", "case02"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    disk_full_at("summary.json")  # everything else was written when the disk filled up
    code = main(["infer", "--checkpoint", "fake.pt", "--input", str(images), "--gt", str(gt), "--output", str(out)])
    assert code == 2
    err = capsys.readouterr().err  # above the error: the progress bars and metrics of the run
    assert err.endswith(f"\nerror: {out / 'summary.json'}: No space left on device\n") and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_read_only_output_is_refused_before_the_metrics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _use_image_model(monkeypatch)
    images, gt = _image_cases(tmp_path, ["case01"])
    run_inference("fake.pt", images, tmp_path / "pred", InferenceOptions(show_progress=False))
    out = tmp_path / "ev"
    out.mkdir()
    out.chmod(0o555)
    if os.access(out, os.W_OK):  # root writes anyway: make creating a file there fail as a read-only mount does
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(tempfile, "TemporaryFile", read_only)

    def no_metrics(*args, **kwargs):
        raise AssertionError("metrics computed before the output folder was checked")

    monkeypatch.setattr(evaluate_module, "case_metrics", no_metrics)
    try:
        assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(gt), "--output", str(out)]) == 2
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {out}: ")
    assert ("Read-only file system" in err) or ("Permission denied" in err)
    assert list(out.iterdir()) == []


def test_a_second_run_into_an_output_folder_in_use_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from s2unet.io import exclusive_lock

    _use_image_model(monkeypatch)
    images, _ = _image_cases(tmp_path, ["case01"])
    out = tmp_path / "out"
    out.mkdir()
    with exclusive_lock(out / ".lock", "output folder"):  # another infer.py writing there now
        code = main(["infer", "--checkpoint", "fake.pt", "--input", str(images), "--output", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err == f"error: output folder {out} is in use by process {os.getpid()} " \
                                    f"(lock {out / '.lock'}); wait for it to finish\n"
        assert [p.name for p in out.iterdir()] == [".lock"]  # the refused run wrote nothing
    run_inference("fake.pt", images, out, InferenceOptions(show_progress=False))  # free again, and the lock file goes with the run
    assert ".lock" not in {p.name for p in out.iterdir()} and (out / "summary.json").is_file()
