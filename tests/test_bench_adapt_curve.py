"""bench/adapt_curve.py: the labels folder of an adaptation curve, as the label app writes one,
read by the real readers and trained on with rehearsal; the report of a tiny curve."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s2unet.config import load_config
from s2unet.data import build_datasets, find_cases, read_case, read_labelled_slices
from s2unet.engine import trainer

from test_bench_hospital_shift import DEPTH, make_two_sources
from test_bench_intensity_shift import load_bench
from test_train import tiny_train_cfg

REPO = Path(__file__).resolve().parents[1]
POOL = "case4,case5"


@pytest.fixture(scope="module")
def bench():
    return load_bench("adapt_curve")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_two_sources(tmp_path_factory.mktemp("two_sources"), n_b=4)


def data_config(root: Path):
    return load_config(REPO / "configs" / "covid_ct.yaml", [f"data.root={root}", "data.labels=[labels]"]).data


def served(path: Path) -> np.ndarray:
    """The volume as the manifest counts its slices (the orientation convention)."""
    return read_case(path, "volume", True).get_array()


def test_labels_folder_lists_the_drawn_slices_for_the_real_reader(bench, data, tmp_path, capsys):
    code = bench.main(["labels", "--set", f"data.root={data}", "--set", "data.labels=[labels]",
                       "--pool", POOL, "--n", "5", "--seed", "1", "--out", str(tmp_path / "five")])
    assert code == 0
    train = [c.strip() for c in capsys.readouterr().out.strip().split(",")]
    assert not (tmp_path / "five.partial").exists()
    cfg = data_config(tmp_path / "five")
    manifest = read_labelled_slices(cfg, [c.case_id for c in find_cases(cfg)])
    assert manifest is not None and sorted(manifest.cases) == sorted(train)
    assert sum(len(ks) for ks in manifest.cases.values()) == 5 and (manifest.axis, manifest.reorient) == (2, True)
    # Labelled slices keep the reference, the others are empty, as the app saves a partly labelled volume.
    for case_id, ks in manifest.cases.items():
        mask, source = served(tmp_path / "five" / "labels" / f"{case_id}.nii.gz"), served(data / "labels" / f"{case_id}.nii.gz")
        rest = np.setdiff1d(np.arange(DEPTH), ks)
        assert np.array_equal(mask[..., ks], source[..., ks]) and not mask[..., rest].any()
    # Every other case is there whole; the training set is exactly the 5 slices.
    assert {c.case_id for c in find_cases(cfg)} >= {"case0", "case1", "case2", "case3"}
    cfg.split.mode, cfg.split.train, cfg.split.val, cfg.split.test = "list", train, ["case3"], []
    bundle = build_datasets(cfg, seed=0)
    assert len(bundle.train) == 5 and {c for c, _ in bundle.train.items} == set(train)
    assert sorted((c, k) for c, k in bundle.train.items) == sorted((c, k) for c, ks in manifest.cases.items() for k in ks)
    # Nested: the 5 slices of seed 1 are among its 10.
    assert bench.write_labels(data_config(data), POOL.split(","), 10, 1, tmp_path / "ten")
    ten = json.loads((tmp_path / "ten" / "labelled_slices.json").read_text())["cases"]
    five = json.loads((tmp_path / "five" / "labelled_slices.json").read_text())["cases"]
    assert all(set(ks) <= set(ten[c]) for c, ks in five.items()) and sum(map(len, ten.values())) == 10


def test_labels_folder_refusals(bench, data, tmp_path, capsys):
    args = ["labels", "--set", f"data.root={data}", "--set", "data.labels=[labels]", "--out", str(tmp_path / "x")]
    assert bench.main([*args, "--n", "3", "--pool", "case4,case9"]) == 2
    assert "--pool: case9 not in" in capsys.readouterr().err
    assert bench.main([*args, "--n", "13", "--pool", POOL]) == 2
    assert f"the pool (case4, case5) has only {2 * DEPTH} slices" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    assert bench.main([*args, "--n", "3", "--pool", POOL]) == 2
    assert "exists" in capsys.readouterr().err


def test_a_tiny_curve_is_reported_against_the_unadapted_model(bench, data, tmp_path):
    runs = tmp_path / "runs"
    source = trainer.train(tiny_train_cfg(data, runs, "data.split.train=[case0, case1, case2]", "data.split.val=[case3]",
                                          "train.epochs=1", "train.steps_per_epoch=2", "name=src", "data.cache_mb=0"))
    out = tmp_path / "labels"
    train = bench.write_labels(data_config(data), POOL.split(","), 4, 0, out)
    common = [f"data.split.train=[{', '.join(train)}]", "data.split.test=[case6, case7]", "train.epochs=1",
              "train.steps_per_epoch=2", "data.cache_mb=0"]
    trainer.train(tiny_train_cfg(out, runs, *common, "data.split.val=[case3]", f"data.rehearse_from={source / 'best.pt'}",
                                 f"name={bench.run_name('rehearse', 4, 2, 0)}"), init_from=source / "best.pt")
    trainer.train(tiny_train_cfg(out, runs, *common, "data.split.val=[]", f"name={bench.run_name('scratch', 4, 2, 0)}"))
    report = tmp_path / "curve"
    assert bench.main(["report", "--checkpoint", str(source / "best.pt"), "--runs", str(runs), "--sizes", "4",
                       "--seeds", "0", "--steps", "2", "--out", str(report)]) == 0
    result = json.loads(report.with_suffix(".json").read_text())
    assert result["unadapted"]["cases"] == ["case6", "case7"] and 0 <= result["unadapted"]["dice"] <= 1
    rehearse = result["arms"]["rehearse"]["4"]["seeds"]["0"]
    summary = json.loads((runs / f"{bench.run_name('rehearse', 4, 2, 0)}-latest" / "summary.json").read_text())
    assert rehearse["dice"] == pytest.approx(summary["test_dice"]) and "dice_at_0.5" in rehearse
    split = json.loads((runs / f"{bench.run_name('rehearse', 4, 2, 0)}-latest" / "split.json").read_text())
    assert split["rehearsed"] == ["case0", "case1", "case2"] and split["train"] == train
    assert result["arms"]["scratch"]["4"]["seeds"]["0"]["threshold"] == 0.5
    table = report.with_suffix(".md").read_text()
    assert "unadapted" in table and "rehearsal" in table and "from scratch" in table
    # A run of the curve that is missing is named, before any inference.
    assert bench.main(["report", "--checkpoint", str(source / "best.pt"), "--runs", str(runs), "--sizes", "4,8",
                       "--seeds", "0", "--steps", "2", "--out", str(tmp_path / "no")]) == 2
    assert not (tmp_path / "no.json").exists()
