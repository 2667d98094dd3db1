"""bench/intensity_shift.py on tiny runs trained on synthetic 8-bit pictures and volumes."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from s2unet.config import DataConfig, WindowConfig, load_config
from s2unet.data import DataError, read_case
from s2unet.engine import trainer
from s2unet.engine.records import run_split_cases
from s2unet.models.checkpoint import atomic_save, read_checkpoint

from test_train import make_volumes, tiny_train_cfg

REPO = Path(__file__).resolve().parents[1]
SPLIT = ["data.split.mode=list", "data.split.train=[case0, case1]", "data.split.val=[case2]",
         "data.split.test=[case3, case4]"]
TINY = ["model.weights=random", "model.decoder_channels=[32, 16, 8]", "train.epochs=1", "train.steps_per_epoch=2",
        "train.batch_size=2", "train.warmup_steps=1", "train.threads=1", "data.num_workers=0", "data.image_size=64"]


def load_bench(name: str):
    """bench/<name>.py loaded as ``python bench/<name>.py`` runs it."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_bench("intensity_shift")


def make_pictures(root: Path, n_cases: int = 5, size: int = 64) -> Path:
    """8-bit PNG radiographs, wider than high (a transposed picture would not fit its mask): a smooth
    gradient with a brighter disc (the structure), and its mask."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[: size - 16, :size]
    for c in range(n_cases):
        cy, cx, r = rng.integers(16, size - 32), rng.integers(16, size - 16), rng.integers(8, 14)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image = (40 + xx * 1.5 + rng.integers(0, 20, yy.shape) + 90 * disc).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"case{c}.png")
        Image.fromarray((255 * disc).astype(np.uint8)).save(root / "masks" / f"case{c}.png")
    return root


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    data = make_pictures(tmp_path_factory.mktemp("pictures"))
    out = tmp_path_factory.mktemp("image_runs")
    cfg = load_config(None, [f"data.root={data}", "data.labels=[masks]", *SPLIT, *TINY, "train.lr=0.01",
                                     f"output_dir={out}", "name=img"])
    return trainer.train(cfg)


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory) -> Path:
    data = make_volumes(tmp_path_factory.mktemp("volumes"), n_cases=5)
    cfg = tiny_train_cfg(data, tmp_path_factory.mktemp("volume_runs"), *SPLIT, *TINY)
    return trainer.train(cfg)


def data_root(run_dir: Path) -> Path:
    """The data folder a run trained on."""
    return Path(read_checkpoint(run_dir / "best.pt")["config"]["data"]["root"])


@pytest.mark.parametrize("run", ["image_run", "volume_run"])
def test_every_shift_is_scored_and_identity_is_the_runs_own_test_score(bench, run, request, tmp_path):
    run_dir = request.getfixturevalue(run)
    out = tmp_path / "shift"
    assert bench.main(["--checkpoint", str(run_dir / "best.pt"), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    (ck,) = result["checkpoints"]
    assert list(ck["shifts"]) == list(bench.SHIFTS) and list(result["shifts"]) == list(bench.SHIFTS)
    assert ck["cases"] == ["case3", "case4"] and ck["normalize"] == "none"
    for entry in ck["shifts"].values():
        assert set(entry["per_case"]) == {"case3", "case4"} and entry["empty_references"] == 0
        assert entry["mean_dice"] == pytest.approx(np.mean(list(entry["per_case"].values())))
    # Training scored best.pt on the same test cases with the inference Predictor.
    test_dice = json.loads((run_dir / "summary.json").read_text())["test_dice"]
    assert ck["shifts"]["identity"]["mean_dice"] == pytest.approx(test_dice, abs=1e-6)
    assert len({round(e["mean_dice"], 6) for e in ck["shifts"].values()}) > 1  # the shifts reach the model
    assert "torch" in result["versions"] and result["machine"]["cpu_model"] and "--checkpoint" in result["command"]
    table = out.with_suffix(".md").read_text()
    assert all(name in table for name in bench.SHIFTS) and run_dir.name in table


def test_shift_is_requantised_to_the_stored_type(bench, volume_run):
    image = read_case(data_root(volume_run) / "images" / "case3.nii.gz")
    stored = image.get_array()
    shifted = bench.shift_image(image, bench.SHIFTS["gamma 0.6"], 255, axis=2)
    values = shifted.get_array()
    assert values.dtype == np.uint8 and shifted.shape == image.shape
    expected = np.rint(255 * (stored.astype(np.float64) / 255) ** 0.6).astype(np.uint8)
    # rounded, not truncated (float32 and float64 powers may round a few ties apart)
    assert np.abs(values.astype(int) - expected).max() <= 1 and np.mean(values != expected) < 0.01
    assert (values != stored).any()
    assert np.array_equal(bench.shift_image(image, bench.SHIFTS["identity"], 255, axis=2).get_array(), stored)


def test_a_picture_is_shifted_in_0_to_1_steps_of_its_bit_depth(bench, image_run):
    image = read_case(data_root(image_run) / "images" / "case3.png", "image")
    assert bench.stored_levels(image, DataConfig()) == 255
    shifted = bench.shift_image(image, bench.SHIFTS["low contrast"], 255, axis=2).picture()
    assert np.array_equal(shifted * 255, np.rint(shifted * 255)) and 0.25 <= shifted.min() and shifted.max() <= 0.75


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_hounsfield_or_float_volumes_are_refused_in_one_line(bench, volume_run, tmp_path, capsys, dtype):
    payload = read_checkpoint(volume_run / "best.pt")
    data = tmp_path / "data"
    shutil.copytree(data_root(volume_run), data)
    hu = data / "images" / "case4.nii.gz"
    stored = nib.load(hu)
    nib.save(nib.Nifti1Image((np.asarray(stored.dataobj) * 5.0 - 1000).astype(dtype), stored.affine), hu)
    payload["config"]["data"]["root"] = str(data)
    run = tmp_path / "run"
    run.mkdir()
    atomic_save(payload, run / "best.pt")
    shutil.copy(volume_run / "split.json", run / "split.json")
    assert bench.main(["--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(hu) in err and np.dtype(dtype).name in err
    assert not (tmp_path / "out.json").exists()


def test_a_model_that_windows_8_bit_values_as_hounsfield_units_is_refused(bench, volume_run):
    image = read_case(data_root(volume_run) / "images" / "case3.nii.gz")
    assert bench.stored_levels(image, DataConfig(kind="volume")) == 255
    with pytest.raises(DataError, match="Hounsfield units.*lung"):
        bench.stored_levels(image, DataConfig(kind="volume", window=WindowConfig(preset="lung")))


def test_a_runs_split_cases_missing_or_moved_are_named(volume_run, tmp_path):
    data = read_checkpoint(volume_run / "best.pt")["config"]["data"]
    cfg = DataConfig(kind="volume", root=data["root"], labels=data["labels"])
    assert [c.case_id for c in run_split_cases(volume_run, cfg, "test")] == ["case3", "case4"]
    with pytest.raises(DataError, match="split.json: cannot read"):
        run_split_cases(tmp_path, cfg, "test")
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "val": [], "test": ["case3", "gone"]}))
    with pytest.raises(DataError, match="1 test case.* not in the data folders.*: gone$"):
        run_split_cases(tmp_path, cfg, "test")
    with pytest.raises(DataError, match="no split 'holdout'; it has test, train, val"):
        run_split_cases(tmp_path, cfg, "holdout")
