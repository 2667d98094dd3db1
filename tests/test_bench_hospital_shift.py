"""bench/hospital_shift.py on a tiny run trained on one source of a synthetic two-source CT set."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from s2unet.data import DataError
from s2unet.engine import trainer

from test_bench_intensity_shift import load_bench
from test_train import tiny_train_cfg

SIZE, DEPTH = 64, 6


@pytest.fixture(scope="module")
def bench():
    return load_bench("hospital_shift")


def make_two_sources(root: Path, n_a: int = 4, n_b: int = 2) -> Path:
    """8-bit CT-like volumes: a bright body ellipse on dark air, two darker lungs in it (their
    masks in ``lungs``), a bright lesion disc of growing size in one lung (``labels``); source
    ``b`` is stored with lower contrast. ``cases.json`` maps the cases to their source."""
    rng = np.random.default_rng(3)
    for folder in ("images", "labels", "lungs"):
        (root / folder).mkdir(parents=True)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    body = ((yy - 32) / 26) ** 2 + ((xx - 32) / 30) ** 2 <= 1
    lungs = (((yy - 32) / 16) ** 2 + ((xx - 19) / 9) ** 2 <= 1) | (((yy - 32) / 16) ** 2 + ((xx - 45) / 9) ** 2 <= 1)
    entries = []
    for c in range(n_a + n_b):
        group = "a" if c < n_a else "b"
        img = np.zeros((SIZE, SIZE, DEPTH), np.float32)
        lab = np.zeros((SIZE, SIZE, DEPTH), np.uint8)
        for k in range(DEPTH):
            r = 2 + k + rng.integers(0, 2)
            lesion = ((yy - 32 - rng.integers(-6, 7)) ** 2 + (xx - 19) ** 2 <= r * r) & lungs
            img[..., k] = 20 + 120 * body - 70 * lungs + 100 * lesion + rng.normal(0, 6, (SIZE, SIZE))
            lab[..., k] = lesion
        if group == "b":
            img = 40 + 0.7 * img
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        name = f"case{c}.nii.gz"
        nib.save(nib.Nifti1Image(np.clip(img, 0, 255).astype(np.uint8), affine), root / "images" / name)
        nib.save(nib.Nifti1Image(lab, affine), root / "labels" / name)
        nib.save(nib.Nifti1Image(np.repeat(lungs[..., None], DEPTH, 2).astype(np.uint8), affine), root / "lungs" / name)
        entries.append({"case": f"case{c}", "group": group, "slices": DEPTH})
    (root / "cases.json").write_text(json.dumps(entries))
    return root


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    data = make_two_sources(tmp_path_factory.mktemp("two_sources"))
    cfg = tiny_train_cfg(data, tmp_path_factory.mktemp("runs"), "data.split.mode=group", "data.split.groups=cases.json",
                         "data.split.train_groups=[a]", "data.split.val_ratio=0.25", "train.epochs=1",
                         "train.steps_per_epoch=2", "train.threads=1", "data.cache_mb=0")
    return trainer.train(cfg)


def test_every_column_is_scored_against_in_source_validation(bench, source_run, tmp_path):
    out = tmp_path / "hs"
    assert bench.main(["--checkpoint", str(source_run / "best.pt"), "--lung-masks", "lungs", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    (ck,) = result["checkpoints"]
    assert list(ck["columns"]) == list(bench.COLUMN_DESCRIPTIONS) == list(result["columns"])
    assert ck["train_groups"] == ["a"] and len(ck["val_cases"]) == 1 and ck["test_cases"] == ["case4", "case5"]
    # The reference and "as stored" are the run's own validation and test scores at its threshold.
    summary = json.loads((source_run / "summary.json").read_text())
    assert ck["in_source"]["dice"] == pytest.approx(summary["best_dice"], abs=1e-6)
    assert ck["columns"]["as stored"]["dice"] == pytest.approx(summary["test_dice"], abs=1e-6)
    assert ck["in_source"]["per_case"].keys() == set(ck["val_cases"])
    for name, e in ck["columns"].items():
        assert e["dice"] == pytest.approx(np.mean(list(e["per_case"].values())))
        assert e["cost"] == pytest.approx(ck["in_source"]["dice"] - e["dice"], abs=1e-4)
        assert e["gap"] == pytest.approx(e["best_dice"] - e["dice"], abs=1e-4) and e["gap"] >= 0
        assert e["meets_goal"] == (e["cost"] <= 0.05 and e["gap"] <= 0.02)
        assert e["best_threshold"] in result["thresholds"] and len(e["dice_by_threshold"]) == len(result["thresholds"])
    assert ck["columns"]["as stored"]["size"] == [SIZE, SIZE] and ck["columns"]["lungs 460"]["size"] == [460, 460]
    assert ck["columns"]["larger lesions"]["slices"] < ck["columns"]["as stored"]["slices"] == 2 * DEPTH
    assert len({round(e["dice"], 6) for e in ck["columns"].values()}) > 1  # the columns reach the model
    table = out.with_suffix(".md").read_text()
    assert all(name in table for name in bench.COLUMN_DESCRIPTIONS) and "in-source validation" in table
    assert ("meets" in table or "misses" in table) and "torch" in result["versions"]


def frame(bench, data: Path, case: str = "case4"):
    img = np.asarray(nib.load(data / "images" / f"{case}.nii.gz").dataobj)
    lab = np.asarray(nib.load(data / "labels" / f"{case}.nii.gz").dataobj) > 0
    lungs = np.asarray(nib.load(data / "lungs" / f"{case}.nii.gz").dataobj) > 0
    return bench.Frame(case, np.moveaxis(img, 2, 0), np.moveaxis(lab, 2, 0)[None], np.moveaxis(lungs, 2, 0), 255)


def test_crops_frame_the_body_or_the_lungs_at_the_asked_size(bench, tmp_path):
    f = frame(bench, make_two_sources(tmp_path / "d"))
    columns = bench.build_columns(0.0)
    lungs, body = columns["lungs 270"](f), columns["body 360"](f)
    assert lungs.planes.shape == (DEPTH, 270, 270) and lungs.planes.dtype == np.uint8
    assert body.planes.shape == (DEPTH, 360, 360) and body.target.shape == (1, DEPTH, 360, 360)
    # The lungs fill the lung crop up to the margin; the body crop keeps air around the lungs.
    rows, cols = np.nonzero(lungs.lungs.any(0))
    assert cols.min() <= 0.05 * 270 and cols.max() >= 0.95 * 270
    assert lungs.lungs.mean() > 1.3 * body.lungs.mean()
    wide = columns["wide field 360"](f)
    assert wide.planes.shape == (DEPTH, 360, 360) and wide.lungs.mean() == pytest.approx(body.lungs.mean() / 1.4 ** 2, rel=0.05)
    body_share = (body.planes > 80).any(0)  # the body (stored 140, lungs 70, air 20) spans the body crop
    assert body_share[180, :8].any() and body_share[180, -8:].any() and not body_share[:8, :8].any()
    # The reference moves with the image: the bright lesion stays under its mask.
    assert lungs.planes[lungs.target[0]].mean() > lungs.planes[~lungs.target[0] & lungs.lungs].mean() + 50
    assert lungs.target.sum() > f.target.sum() * (270 / SIZE) ** 2  # enlarged with the lungs


def test_lung_window_saturates_soft_tissue_and_keeps_the_lungs_grey(bench, tmp_path):
    f = frame(bench, make_two_sources(tmp_path / "d"))
    out = bench.build_columns(0.0)["lung window"](f)
    soft = f.planes >= 0.45 * 255 + 1
    assert soft.any() and (out.planes[soft] == 255).all()
    assert (out.planes[f.planes <= 0.08 * 255 - 1] == 0).all()
    lung = f.lungs & ~f.target[0]
    assert 0 < np.median(out.planes[lung]) < 255 and np.median(out.planes[lung]) > np.median(f.planes[lung])


def test_blur_noise_and_larger_lesions(bench, tmp_path):
    f = frame(bench, make_two_sources(tmp_path / "d"))
    cut = bench.larger_lesion_cut([f])
    columns = bench.build_columns(cut)
    blur = columns["blur 2"](f)
    assert np.abs(np.diff(blur.planes.astype(float), axis=2)).mean() < np.abs(np.diff(f.planes.astype(float), axis=2)).mean()
    noisy = columns["noise 0.06"](f)
    assert np.array_equal(noisy.planes, columns["noise 0.06"](f).planes)  # seeded by the case
    assert 10 < np.std(noisy.planes.astype(float) - f.planes) < 20  # 0.06 x 255, clipped at the ends
    big = columns["larger lesions"](f)
    shares = bench.lesion_share(f.target)
    assert len(big.slices) == 2 and shares[big.slices].min() >= shares[np.setdiff1d(np.arange(DEPTH), big.slices)].max()
    assert np.array_equal(big.planes, f.planes)


def test_missing_lung_masks_are_refused_before_any_prediction(bench, source_run, tmp_path, capsys):
    code = bench.main(["--checkpoint", str(source_run / "best.pt"), "--lung-masks", "nowhere", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nowhere" in err and "case" in err
    assert not (tmp_path / "o.json").exists()
    # Without lung columns no lung mask is needed.
    assert bench.main(["--checkpoint", str(source_run / "best.pt"), "--columns", "as stored,gamma 0.6",
                       "--lung-masks", "nowhere", "--out", str(tmp_path / "o")]) == 0
    assert list(json.loads((tmp_path / "o.json").read_text())["checkpoints"][0]["columns"]) == ["as stored", "gamma 0.6"]


def test_a_frame_without_lungs_cannot_be_lung_cropped(bench, tmp_path):
    f = frame(bench, make_two_sources(tmp_path / "d"))
    f.lungs = None
    with pytest.raises(DataError, match="case4: a lung crop needs the lung masks"):
        bench.build_columns(0.0)["lungs 360"](f)


def test_harmonisation_flags_act_on_every_column_as_infer_applies_them(bench, source_run, tmp_path):
    out = tmp_path / "hs_h"
    argv = ["--checkpoint", str(source_run / "best.pt"), "--columns", "gamma 1.6", "--lung-masks", "",
            "--harmonise-intensity", "histogram", "--out", str(out)]
    assert bench.main(argv) == 0
    harmonised = json.loads(out.with_suffix(".json").read_text())
    assert harmonised["harmonise"] == {"intensity": "histogram", "fov": "none"}
    assert bench.main(argv[:-4] + ["--out", str(tmp_path / "hs_plain")]) == 0
    plain = json.loads((tmp_path / "hs_plain").with_suffix(".json").read_text())
    assert plain["harmonise"] == {"intensity": "none", "fov": "none"}
    # The histogram map is the one infer.py applies: it changes what the model sees, so the scores move.
    (h,), (p,) = harmonised["checkpoints"], plain["checkpoints"]
    assert h["columns"]["gamma 1.6"]["dice_by_threshold"] != p["columns"]["gamma 1.6"]["dice_by_threshold"]
