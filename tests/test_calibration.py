"""A threshold that travels: temperature scaling fitted on validation, stored in the checkpoint and
applied by the Predictor; the threshold chosen on a flat stretch of the Dice curve; the warning
when the threshold empties most slices of a case that 0.5 would not."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from s2unet.config import config_from_dict, load_config
from s2unet.engine.validation import THRESHOLDS
from s2unet.inference import run as run_module
from s2unet.inference.threshold_check import empty_slices_warning, slice_peaks
from s2unet.metrics import fit_calibration, flat_threshold, sample_pixels, threshold_flatness
from s2unet.models import create_model_from_config
from s2unet.models.base import SegmentationModel
from s2unet.models.calibration import Calibration
from s2unet.models.checkpoint import LoadedModel, atomic_save, load_model_checkpoint, model_payload
from s2unet.predict import Predictor
from s2unet.weights import CheckpointError


def _pixels(n: int = 100_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated logits and labels drawn from them: P(y = 1) = sigmoid(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    return z, rng.random(n) < 1.0 / (1.0 + np.exp(-z))


# ------------------------------------------------------------------------------- fitting
def test_the_fit_recovers_a_known_temperature() -> None:
    z, y = _pixels()
    fitted = fit_calibration(4.0 * z, y)  # four times over-confident
    assert fitted.fitted and fitted.temperature == pytest.approx(4.0, rel=0.05) and fitted.bias == 0.0
    with_bias = fit_calibration(4.0 * (z - 1.0), y, bias=True)  # and shifted: z = z_obs / 4 + 1
    assert with_bias.temperature == pytest.approx(4.0, rel=0.05) and with_bias.bias == pytest.approx(1.0, abs=0.05)


def test_the_fit_from_sampled_probabilities_of_several_cases() -> None:
    z, y = _pixels()
    probs = torch.sigmoid(torch.from_numpy(0.5 * z)).float().numpy()  # under-confident: T 0.5
    cases = [(probs[:30_000].reshape(3, 100, 100), y[:30_000].reshape(3, 100, 100)),
             (probs[30_000:], y[30_000:])]
    logits, pixels = sample_pixels([p for p, _ in cases], [t for _, t in cases], max_pixels=50_000)
    assert logits.shape == pixels.shape == (50_000,)
    assert np.array_equal(logits, sample_pixels([p for p, _ in cases], [t for _, t in cases], max_pixels=50_000)[0])
    assert fit_calibration(logits, pixels).temperature == pytest.approx(0.5, rel=0.05)


def test_pixels_of_one_class_keep_the_identity_and_say_why() -> None:
    fitted = fit_calibration(np.linspace(-3, 3, 100), np.zeros(100, bool))
    assert not fitted.fitted and fitted.temperature == 1.0 and "one class" in fitted.describe()


# ------------------------------------------------------------------------------- threshold rule
def test_the_rule_picks_the_centre_of_a_plateau_over_a_sharp_isolated_peak() -> None:
    thr = np.asarray(THRESHOLDS, dtype=float)
    dice = np.full(thr.size, 0.3)
    dice[(thr >= 0.25) & (thr <= 0.55)] = 0.75  # a plateau 0.25..0.55
    dice[np.isclose(thr, 0.85)] = 0.8  # the best single point, between poor neighbours
    assert thr[dice.argmax()] == pytest.approx(0.85)  # what the argmax chose
    chosen, flatness = flat_threshold(thr, dice)
    assert chosen == pytest.approx(0.40) and flatness == pytest.approx(0.0)
    assert threshold_flatness(thr, dice, 0.85) == pytest.approx(0.5)  # the peak hangs on a knife's edge


# ------------------------------------------------------------------------------- checkpoint
def _tiny_cfg():
    return load_config(None, ["model.encoder=mobilesam_tinyvit", "model.weights=random", "data.image_size=64"])


def test_calibration_is_stored_applied_and_an_old_checkpoint_predicts_as_before(tmp_path: Path) -> None:
    cfg = _tiny_cfg()
    model = create_model_from_config(cfg).eval()
    calibration = Calibration(3.0, 0.0, True, "fitted on 10 validation pixels")
    atomic_save(model_payload(model, cfg, 0.6, {"threshold_flatness": 0.02},
                              calibration=calibration.to_payload()), tmp_path / "new.pt")
    atomic_save(model_payload(model, cfg, 0.6, {}), tmp_path / "old.pt")  # as written before calibration
    new, old = load_model_checkpoint(tmp_path / "new.pt"), load_model_checkpoint(tmp_path / "old.pt")
    assert new.calibration == calibration
    assert old.calibration == Calibration() and "before calibration" in old.calibration.describe()
    image = np.random.default_rng(0).random((48, 40)).astype(np.float32)
    with torch.no_grad():  # the model's own logits, at the image's size, as the Predictor resizes them
        logits = torch.nn.functional.interpolate(model.predict_logits(torch.from_numpy(
            np.stack([np.asarray(torch.nn.functional.interpolate(torch.from_numpy(image)[None, None], 64,
                                                                  mode="bilinear", antialias=True)[0, 0])] * 3)[None])),
            (48, 40), mode="bilinear", align_corners=False)[0].numpy()
    raw = Predictor(old.model, old.config, threshold=old.threshold, calibration=old.calibration).predict_image(image)
    assert np.array_equal(raw, Predictor(old.model, old.config, threshold=0.6).predict_image(image))
    np.testing.assert_allclose(raw, torch.sigmoid(torch.from_numpy(logits)).numpy(), atol=1e-5)
    predictor = Predictor(new.model, new.config, threshold=new.threshold, calibration=new.calibration)
    calibrated = predictor.predict_image(image)
    np.testing.assert_allclose(calibrated, torch.sigmoid(torch.from_numpy(logits) / 3.0).numpy(), atol=1e-5)
    assert not np.allclose(calibrated, raw, atol=1e-3)
    # the calibrated threshold cuts the model's own logits where Calibration.logit_cut says
    cut = new.calibration.logit_cut(0.6)
    near = np.abs(logits - cut) < 1e-3  # float rounding decides exactly at the cut
    assert np.array_equal(predictor.binarize(calibrated)[~near], (logits >= cut)[~near])


@pytest.mark.parametrize("entry", [{"temperature": 0.0}, {"temperature": "hot"}, {"bias": 1.0}])
def test_a_broken_calibration_entry_is_refused_naming_the_file(tmp_path: Path, entry: dict) -> None:
    cfg = _tiny_cfg()
    atomic_save(model_payload(create_model_from_config(cfg), cfg, 0.5, {}, calibration=entry), tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt.*calibration"):
        load_model_checkpoint(tmp_path / "bad.pt")


# ------------------------------------------------------------------------------- empty slices
def test_the_empty_slices_warning_fires_on_a_shifted_case_and_not_on_a_normal_one() -> None:
    shifted = np.array([0.7] * 8 + [0.95, 0.02])  # responds everywhere, but below the threshold
    warning = empty_slices_warning("caseX", shifted, 0.9)
    assert warning is not None and warning["empty_share"] == pytest.approx(0.9)
    assert warning["empty_share_at_0.5"] == pytest.approx(0.1)
    assert "caseX" in warning["message"] and "--threshold" in warning["message"]
    assert "Another hospital's scans" in warning["message"]
    normal = np.array([0.97] * 3 + [0.02] * 7)  # lesions on three slices, nothing elsewhere
    assert empty_slices_warning("caseY", normal, 0.9) is None
    assert empty_slices_warning("caseZ", shifted, 0.5) is None  # at 0.5 nothing is lost


class _Constant(SegmentationModel):
    """Logit ``level`` where the centre input channel is bright, -10 elsewhere."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = torch.where(x[:, 1:2] > 0.5, torch.tensor(self.level), torch.tensor(-10.0))
        return [logits, logits, logits]


@pytest.mark.parametrize("level, warned", [(1.0, True), (6.0, False)], ids=["responds_below", "confident"])
def test_infer_warns_in_summary_report_and_console(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture, level: float, warned: bool) -> None:
    image = np.full((32, 32, 6), 40, np.uint8)
    image[8:20, 8:20, :] = 200  # a bright square on every slice
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / "case01.nii.gz"))
    cfg = config_from_dict({"data": {"kind": "volume", "image_size": 32, "labels": ["infection"]}})
    loaded = LoadedModel(_Constant(level), cfg, 0.9, {"threshold_flatness": 0.01})
    monkeypatch.setattr(run_module, "load_model_checkpoint", lambda path, device: loaded)
    summary = run_module.run_inference("best.pt", tmp_path / "case01.nii.gz", tmp_path / "out")
    report = json.loads((tmp_path / "out" / "case01_report.json").read_text())
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    err = capsys.readouterr().err
    assert "threshold 0.90 from the checkpoint, validation Dice range 0.010" in err
    assert written["settings"]["threshold_flatness"] == 0.01 and not written["settings"]["calibration"]["fitted"]
    assert [w["case"] for w in summary["threshold_warnings"]] == (["case01"] if warned else [])
    assert ("threshold_warning" in report) == warned and ("WARNING: case01" in err) == warned
    if warned:
        assert written["threshold_warnings"][0]["empty_share"] == 1.0
        assert written["threshold_warnings"][0]["empty_share_at_0.5"] == 0.0
