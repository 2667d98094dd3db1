"""Dataset fingerprint: stored by training, compared at inference (warnings), harmonisation flags."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from s2unet.config import config_from_dict, load_config
from s2unet.data import DataError, SliceDataset, build_datasets, find_cases
from s2unet.data.fingerprint import Fingerprint, dataset_fingerprint, measure_slice, pool, quantile_shift
from s2unet.data.intensity import normalize_unit
from s2unet.engine import trainer
from s2unet.inference import run as run_module
from s2unet.inference import InferenceOptions, run_inference
from s2unet.inference.shift import LIMITS, compare_inputs
from s2unet.models.base import SegmentationModel
from s2unet.models.checkpoint import LoadedModel, load_model_checkpoint, read_checkpoint
from s2unet.predict import harmonise
from test_train import tiny_train_cfg

REPO = Path(__file__).resolve().parents[1]
AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])
SIZE, DEPTH = 64, 6


def anatomy(scale: float = 1.0, gamma: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A chest-like uint8 volume (dark air, a body ellipse, two darker lungs, a bright lesion in
    one lung) and its lesion mask; ``scale`` shrinks everything about the centre (zoomed out),
    ``gamma`` changes the contrast."""
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[:SIZE, :SIZE].astype(np.float32) - SIZE / 2 + 0.5
    x, y = x / scale, y / scale
    body = (x / 28) ** 2 + (y / 19) ** 2 <= 1
    lungs = ((np.abs(x) - 12) / 9) ** 2 + (y / 13) ** 2 <= 1
    lesion = (x - 12) ** 2 + (y - 2) ** 2 <= 25
    img = np.full((SIZE, SIZE), 10.0)
    img[body] = 120
    img[lungs] = 40
    img[lesion] = 220
    vol = np.repeat(img[..., None], DEPTH, axis=2) + rng.normal(0, 6, (SIZE, SIZE, DEPTH))
    vol = 255 * (np.clip(vol, 0, 255) / 255) ** gamma
    return vol.round().astype(np.uint8), np.repeat(lesion[..., None], DEPTH, axis=2).astype(np.uint8)


def _save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))
    return path


@pytest.fixture(scope="module")
def anatomy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("anatomy")
    for c in range(3):
        img, lab = anatomy(seed=c)
        _save(img, root / "images" / f"case{c}.nii.gz")
        _save(lab, root / "labels" / f"case{c}.nii.gz")
    return root


def _cfg(root: Path = Path(".")):
    return config_from_dict({"data": {"kind": "volume", "image_size": 64, "labels": ["labels"], "root": str(root)}})


@pytest.fixture(scope="module")
def training_fingerprint(anatomy_root: Path) -> dict:
    cfg = _cfg(anatomy_root)
    cases = find_cases(cfg.data)
    return dataset_fingerprint([SliceDataset(cases, cfg.data, train=False)]).to_payload()


class ThresholdModel(SegmentationModel):
    """The lesion is what is brighter than 0.7 on the input scale: a known, pointwise model."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = 40.0 * (x[:, 1:2] - 0.7)
        return [logits, logits, logits]


def _use(monkeypatch, fingerprint) -> None:
    loaded = LoadedModel(ThresholdModel(), _cfg(), 0.5, {}, fingerprint=fingerprint)
    monkeypatch.setattr(run_module, "load_model_checkpoint", lambda path, device: loaded)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def _infer(tmp_path: Path, name: str, image: np.ndarray, capsys, **flags) -> tuple[dict, str, np.ndarray]:
    path = _save(image, tmp_path / f"in_{name}" / f"{name}.nii.gz")
    summary = run_inference("model.pt", path, tmp_path / f"out_{name}", InferenceOptions(**flags))
    pred = nib.load(tmp_path / f"out_{name}" / f"{name}_pred.nii.gz")
    assert pred.shape == image.shape and np.allclose(pred.affine, AFFINE)  # the input's own geometry
    return summary, capsys.readouterr().err, np.asarray(pred.dataobj) > 0


def _warned(summary: dict, case: str) -> list[str]:
    return [w["property"] for w in summary["fingerprint_check"]["cases"][case]["warnings"]]


# --------------------------------------------------------------------------------------- training
def test_training_stores_the_fingerprint_in_its_checkpoints(anatomy_root: Path, tmp_path: Path) -> None:
    run = trainer.train(tiny_train_cfg(anatomy_root, tmp_path, "train.epochs=1", "train.steps_per_epoch=1"))
    for name in ("best.pt", "last.pt"):
        fp = Fingerprint.from_payload(read_checkpoint(run / name)["fingerprint"])
        assert fp.n_slices == 2 * DEPTH and fp.orientation == "LPI" and fp.pixel_size == pytest.approx([0.8, 0.8])
        rows, cols = Fingerprint.extent(fp.body_box)
        assert abs(rows - 57 / 64) < 0.05 and abs(cols - 39 / 64) < 0.05  # the body ellipse's box
        assert fp.foreground_share == pytest.approx(81 / 64**2, rel=0.05)
        assert len(fp.intensity_quantiles) == 99 and abs(sum(fp.histogram) - 1) < 1e-6
    assert load_model_checkpoint(run / "best.pt").fingerprint == read_checkpoint(run / "best.pt")["fingerprint"]


# -------------------------------------------------------------------------------------- inference
def test_an_input_like_the_training_data_raises_no_warning(monkeypatch, training_fingerprint, tmp_path, capsys) -> None:
    _use(monkeypatch, training_fingerprint)
    image, lesion = anatomy(seed=7)
    summary, err, pred = _infer(tmp_path, "same", image, capsys)
    assert summary["fingerprint_check"]["available"] and _warned(summary, "same") == []
    assert "warning" not in err and _dice(pred, lesion > 0) > 0.95
    report = json.loads((tmp_path / "out_same" / "same_report.json").read_text())
    assert report["shift_warnings"] == "" and report["shift_intensity"] < LIMITS["intensity"]


@pytest.mark.parametrize("shift, prop", [({"gamma": 0.4}, "intensity"), ({"scale": 0.5}, "fov")])
def test_a_shifted_input_warns_naming_the_property(monkeypatch, training_fingerprint, tmp_path, capsys, shift, prop):
    _use(monkeypatch, training_fingerprint)
    summary, err, _ = _infer(tmp_path, "far", anatomy(seed=7, **shift)[0], capsys)
    assert prop in _warned(summary, "far") and summary["fingerprint_check"]["cases_warned"] == ["far"]
    line = next(line for line in err.splitlines() if f"far: {prop}:" in line)
    assert "Dice will likely be lower" in line and "--init-from" in line and "s2unet label" in line


def test_histogram_harmonisation_brings_a_contrast_shift_back(monkeypatch, training_fingerprint, tmp_path, capsys):
    _use(monkeypatch, training_fingerprint)
    train = Fingerprint.from_payload(training_fingerprint)
    image, lesion = anatomy(seed=7, gamma=0.4)
    inputs = np.stack([np.repeat(image[None, :, :, k] / np.float32(255), 3, axis=0) for k in range(DEPTH)])
    before = quantile_shift(pool([measure_slice(x) for x in inputs]), train)
    after = quantile_shift(pool([measure_slice(x) for x in harmonise(inputs, train, intensity="histogram")]), train)
    assert after < 0.3 * before
    _, _, plain = _infer(tmp_path, "plain", image, capsys)
    summary, _, pred = _infer(tmp_path, "hist", image, capsys, harmonise_intensity="histogram")
    assert summary["settings"]["harmonise"] == {"intensity": "histogram", "fov": "none"}
    assert summary["fingerprint_check"]["cases"]["hist"]["harmonisation"]["intensity"] == "histogram"
    assert _dice(plain, lesion > 0) < 0.5 < 0.9 < _dice(pred, lesion > 0)


def test_fov_harmonisation_crops_to_the_training_field_of_view(monkeypatch, training_fingerprint, tmp_path, capsys):
    _use(monkeypatch, training_fingerprint)
    train = Fingerprint.from_payload(training_fingerprint)
    image, lesion = anatomy(seed=7, scale=0.5)
    inputs = np.repeat(image[None, :, :, 0] / np.float32(255), 3, axis=0)
    ratio = lambda x: np.divide(Fingerprint.extent(pool([measure_slice(x)]).body_box), Fingerprint.extent(train.body_box))
    assert np.all(ratio(inputs) < 0.6)
    assert np.allclose(ratio(harmonise(inputs, train, fov="body")), 1.0, atol=0.1)
    summary, _, pred = _infer(tmp_path, "fov", image, capsys, harmonise_fov="body")
    window = summary["fingerprint_check"]["cases"]["fov"]["harmonisation"]["window"]
    assert 0.2 < window[0] and window[1] < 0.8  # a window inside the frame, predicted there and pasted back
    assert _dice(pred, lesion > 0) > 0.8 and summary["settings"]["harmonise"]["fov"] == "body"


def test_clahe_harmonisation_matches_clahe_enhanced_training_data() -> None:
    raw = np.stack([np.repeat(anatomy(seed=s, gamma=1.6)[0][None, :, :, 0] / np.float32(255), 3, axis=0)
                    for s in range(3)])
    train = pool([measure_slice(normalize_unit(x, "clahe")) for x in raw])
    case = raw[:1]
    before = quantile_shift(pool([measure_slice(case[0])]), train)
    after = quantile_shift(pool([measure_slice(harmonise(case, train, intensity="clahe")[0])]), train)
    assert after < 0.5 * before


def test_an_old_checkpoint_says_once_that_the_check_is_unavailable(monkeypatch, tmp_path, capsys) -> None:
    _use(monkeypatch, None)
    for c in range(2):
        _save(anatomy(seed=c)[0], tmp_path / "in" / f"case{c}.nii.gz")
    summary = run_inference("model.pt", tmp_path / "in", tmp_path / "out", InferenceOptions(harmonise_intensity="clahe"))
    err = capsys.readouterr().err
    assert err.count("no dataset fingerprint") == 1 and "warning" not in err
    assert summary["fingerprint_check"]["available"] is False
    assert summary["settings"]["harmonise"]["intensity"] == "clahe"
    with pytest.raises(DataError, match="--harmonise-intensity histogram .*does not have"):
        run_inference("model.pt", tmp_path / "in", tmp_path / "out2", InferenceOptions(harmonise_intensity="histogram"))
    assert not (tmp_path / "out2").exists()


def test_an_unknown_harmonisation_is_refused(monkeypatch, training_fingerprint, tmp_path) -> None:
    _use(monkeypatch, training_fingerprint)
    with pytest.raises(DataError, match="--harmonise-fov 'head'"):
        run_inference("model.pt", tmp_path, tmp_path / "out", InferenceOptions(harmonise_fov="head"))


# ------------------------------------------------------------------------------- the shared CT
def _case_fingerprint(dataset: SliceDataset, case_id: str, transform=lambda x: x) -> Fingerprint:
    items = dataset.case_items(case_id)[::4]
    return pool([measure_slice(transform(dataset.native_item(i)[0])) for i in items],
                [dataset.geometry(items[0])[0]] * len(items), [dataset.geometry(items[0])[1]] * len(items))


@pytest.mark.shared
@pytest.mark.parametrize("split", [[], ["data.split.mode=group", "data.split.groups=cases.json",
                                        "data.split.train_groups=[radiopaedia]"]])
def test_shared_ct_in_source_cases_pass_and_shifted_ones_warn(shared_dir: Path, split: list[str]) -> None:
    cfg = load_config(REPO / "configs" / "covid_ct.yaml", [f"data.root={shared_dir / 'data' / 'ct_covid19_ma20'}", *split])
    bundle = build_datasets(cfg.data, cfg.seed)
    train = dataset_fingerprint([bundle.train])
    for case in bundle.val.cases:
        assert compare_inputs(_case_fingerprint(bundle.val, case.case_id), train)[1] == [], case.case_id
    case = bundle.val.cases[0].case_id
    saturated = lambda x: np.clip(x * 2.0, 0, 1)  # a narrower window: soft tissue goes white
    assert [p for p, _ in compare_inputs(_case_fingerprint(bundle.val, case, saturated), train)[1]] == ["intensity"]
    zoomed_out = lambda x: np.pad(x[:, ::3, ::3], ((0, 0), (86, 85), (86, 85)), constant_values=x.min())  # a third of the size
    assert "fov" in [p for p, _ in compare_inputs(_case_fingerprint(bundle.val, case, zoomed_out), train)[1]]
