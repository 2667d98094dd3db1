"""Cross-source robustness (issue #15): group split, few-label training, robustness augmentation,
input normalisation, --init-from, the test split's score, CT slice files, post-processing."""
from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from s2unet.config import AugmentConfig, ConfigError, DataConfig, SplitConfig, WindowConfig, config_from_dict, load_config
from s2unet.data import (
    DataError,
    SliceDataset,
    build_datasets,
    find_cases,
    read_case_groups,
    slice_as_volume,
    split_cases,
)
from s2unet.data import choose_train_items, make_train_sampler
from s2unet.data.intensity import hu_bounds, normalize_unit
from s2unet.data.transforms import build_augment, seed_augment
from s2unet.engine import trainer
from s2unet.engine.checkpoint import init_from_checkpoint
from s2unet.engine.rehearsal import with_rehearsal
from s2unet.inference import InferenceOptions, run_inference
from s2unet.models import create_model_from_config
from s2unet.models.checkpoint import atomic_save, model_payload
from s2unet.predict.postprocess import fill_holes, keep_largest_components
from s2unet.weights import CheckpointError
from test_inference import ThresholdModel, _use_model
from test_train import make_volumes, tiny_train_cfg, train_log

REPO = Path(__file__).resolve().parents[1]
IDS = [f"c{i}" for i in range(6)]
GROUPS = {"c0": "a", "c1": "a", "c2": "a", "c3": "b", "c4": "b", "c5": "b"}


# -------------------------------------------------------------------------------- group split
@pytest.mark.parametrize("layout", ["dict", "list", "csv"])
def test_case_groups_file_layouts(tmp_path: Path, layout: str) -> None:
    if layout == "dict":
        path = tmp_path / "g.json"
        path.write_text(json.dumps(GROUPS))
    elif layout == "list":
        path = tmp_path / "g.json"
        path.write_text(json.dumps([{"case": c, "group": g, "slices": 3} for c, g in GROUPS.items()]))
    else:
        path = tmp_path / "g.csv"
        path.write_text("case,group\n" + "".join(f"{c},{g}\n" for c, g in GROUPS.items()))
    assert read_case_groups(path) == GROUPS


def test_case_groups_file_refusals(tmp_path: Path) -> None:
    bad = tmp_path / "g.csv"
    bad.write_text("id,site\nc0,a\n")
    with pytest.raises(DataError, match="g.csv: a groups CSV needs the header columns case,group"):
        read_case_groups(bad)
    twice = tmp_path / "t.json"
    twice.write_text(json.dumps([{"case": "c0", "group": "a"}, {"case": "c0", "group": "b"}]))
    with pytest.raises(DataError, match="listed more than once: c0"):
        read_case_groups(twice)


def test_group_split_tests_on_the_other_group() -> None:
    split = split_cases(IDS, SplitConfig(mode="group", groups="g.json", train_groups=["a"], val_ratio=0.34), 0, GROUPS)
    assert split["test"] == ["c3", "c4", "c5"]
    assert len(split["val"]) == 1 and sorted(split["train"] + split["val"]) == ["c0", "c1", "c2"]
    reverse = split_cases(IDS, SplitConfig(mode="group", groups="g.json", train_groups=["b"], val_ratio=0.0), 0, GROUPS)
    assert reverse == {"train": ["c3", "c4", "c5"], "val": [], "test": ["c0", "c1", "c2"]}


def test_group_split_refuses_unmapped_cases_and_unknown_groups() -> None:
    cfg = SplitConfig(mode="group", groups="g.json", train_groups=["a"])
    with pytest.raises(DataError, match="no group for 1 case.*c9"):
        split_cases([*IDS, "c9"], cfg, 0, GROUPS)
    with pytest.raises(DataError, match=r"train_groups names groups without cases: \['x'\]"):
        split_cases(IDS, SplitConfig(mode="group", groups="g.json", train_groups=["x"]), 0, GROUPS)


@pytest.mark.parametrize("values, message", [
    ({"data": {"split": {"mode": "group", "train_groups": ["a"]}}}, "needs a JSON/CSV file"),
    ({"data": {"split": {"mode": "group", "groups": "g.json"}}}, "needs at least one training group"),
    ({"data": {"split": {"mode": "group", "groups": "g", "train_groups": ["a"], "test_groups": ["a"]}}},
     "in both train_groups and test_groups"),
    ({"data": {"augment": {"crop_min": 0.0}}}, r"data.augment.crop_min must be in \(0, 1\], got 0.0"),
    ({"data": {"augment": {"rot90": 1.5}}}, r"data.augment.rot90 must be in \[0, 1\]"),
    ({"data": {"max_train_slices": -1}}, r"data.max_train_slices must be >= 0, got -1"),
    ({"postprocess": {"keep_largest": [2, 1]}}, r"keep_largest: give one count for all channels or one per label \(1\)"),
    ({"postprocess": {"keep_largest": [0]}}, r"postprocess.keep_largest\[0\] must be >= 1, got 0"),
])
def test_config_refuses_bad_robustness_keys(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


# ------------------------------------------------------------------------------ few labels
def test_train_slice_choice_is_seeded_and_nested() -> None:
    five, ten = choose_train_items(100, 5, seed=3), choose_train_items(100, 10, seed=3)
    assert len(set(ten)) == 10 and set(five) <= set(ten)
    assert choose_train_items(100, 5, seed=3) == five and choose_train_items(100, 5, seed=4) != five
    with pytest.raises(DataError, match="max_train_slices is 7 but the training split holds only 6"):
        choose_train_items(6, 7, seed=0)


def test_max_train_slices_restricts_the_training_set(tmp_path: Path) -> None:
    root = make_volumes(tmp_path / "v", n_cases=3, size=40, depth=6)
    cfg = DataConfig(kind="volume", root=str(root), labels=["labels"], image_size=32, num_workers=0,
                     max_train_slices=4, split=SplitConfig(mode="list", val=["case2"]))
    bundle = build_datasets(cfg, seed=0)
    assert len(bundle.train) == 4 and len(bundle.val) == 6  # validation keeps every slice
    assert len(bundle.train.lesion_flags()) == 4
    served = {(s["case"], s["slice"]) for s in (bundle.train[i] for i in range(4))}
    assert served == set(bundle.train.items)


def test_fine_tuning_rehearses_the_cases_its_checkpoint_learnt_from(tmp_path: Path) -> None:
    root = make_volumes(tmp_path / "v", n_cases=4, size=64, depth=6)
    source = trainer.train(tiny_train_cfg(root, tmp_path / "runs", "train.epochs=1", "name=src"))
    cfg = tiny_train_cfg(root, tmp_path / "runs", "train.epochs=1", "name=adapt", "data.split.train=[case3]",
                         "data.max_train_slices=2", f"data.rehearse_from={source / 'best.pt'}",
                         "data.rehearse_share=0.75")
    bundle = with_rehearsal(build_datasets(cfg.data, cfg.seed), cfg)
    assert bundle.split["rehearsed"] == ["case0", "case1"]  # the source run's training cases
    assert [c for c, _ in bundle.train.items].count("case3") == 2 and len(bundle.train) == 2 + 12
    draws = bundle.train.rehearsed()[make_train_sampler(bundle.train, cfg.data, 4000, seed=0).epoch_indices()]
    assert draws.mean() == pytest.approx(0.75, abs=0.03)
    assert bundle.train[5]["case"] == "rehearsed:case0" and bundle.train[0]["case"] == "case3"

    run = trainer.train(cfg, init_from=source / "best.pt")
    assert json.loads((run / "split.json").read_text())["rehearsed"] == ["case0", "case1"]

    other = config_from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "task": "multilabel"}})
    with pytest.raises(CheckpointError, match="its task is binary with 1 output channels, this run's multilabel"):
        with_rehearsal(bundle, other)
    nowhere = config_from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "rehearse_from": str(tmp_path / "no.pt")}})
    with pytest.raises(CheckpointError, match=r"data.rehearse_from .*no.pt: no such checkpoint file"):
        with_rehearsal(bundle, nowhere)
    moved = tmp_path / "moved"
    root.rename(moved)
    with pytest.raises(DataError, match=r"data.rehearse_from .*best.pt: its training cases under .*v"):
        with_rehearsal(bundle, cfg)


def test_rehearsal_settings_without_a_checkpoint_are_refused() -> None:
    with pytest.raises(ConfigError, match="rehearse_share is set but data.rehearse_from names no checkpoint"):
        config_from_dict({"data": {"rehearse_share": 0.3}})
    with pytest.raises(ConfigError, match=r"rehearse_share must be in \(0, 1\)"):
        config_from_dict({"data": {"rehearse_from": "x.pt", "rehearse_share": 1.0}})


# ----------------------------------------------------------------------------- augmentation
def _square_sample(size: int = 48) -> dict:
    mask = torch.zeros(1, size, size)
    mask[0, 8:20, 12:40] = 1.0  # off-centre and not square: any misalignment shows
    return {"image": mask.repeat(3, 1, 1).clone(), "mask": mask, "case": "a", "slice": 0}


def test_geometric_robustness_moves_image_and_mask_together() -> None:
    cfg = AugmentConfig(rotate_deg=0, scale=0, translate=0, brightness=0, contrast=0, affine_prob=1.0,
                        crop_min=0.6, zoom_out=0.4, rot90=1.0)
    transform = build_augment(cfg, "binary", 48)
    moved = 0
    for seed in range(8):
        seed_augment(transform, seed)
        out = transform(_square_sample())
        assert out["image"].shape == (3, 48, 48) and out["mask"].shape == (1, 48, 48)
        assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
        agree = ((out["image"][1] > 0.5) == (out["mask"][0] > 0.5)).float().mean()
        assert agree > 0.97, seed
        moved += not torch.equal(out["mask"], _square_sample()["mask"])
    assert moved == 8


def script_overrides(array: str) -> list[str]:
    """The overrides of a ``--set`` array of scripts/robust_augment.sh, as bash expands it."""
    words = subprocess.run(["bash", "-c", f'source scripts/robust_augment.sh && printf "%s\\n" "${{{array}[@]}}"'],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.splitlines()
    assert words[::2] == ["--set"] * (len(words) // 2)
    return words[1::2]


@pytest.mark.parametrize("arm, n_views", [("", 2), ("FLIPROT", 8)])
def test_fliprot_arm_gives_every_flip_and_quarter_turn_alike(arm: str, n_views: int) -> None:
    # The shipped CT config's flips alone, then with the fliprot arm of scripts/cross_source.sh; the
    # small rotation, scale and intensity changes are switched off to see the orientation alone.
    still = ["data.augment.rotate_deg=0", "data.augment.scale=0", "data.augment.translate=0",
             "data.augment.brightness=0", "data.augment.contrast=0"]
    cfg = load_config(REPO / "configs" / "covid_ct.yaml", [*(script_overrides(arm) if arm else []), *still])
    transform = build_augment(cfg.data.augment, "binary", 48)
    base = _square_sample()["mask"][0].numpy()
    views = [np.rot90(m, k) for m in (base, base[:, ::-1]) for k in range(4)]  # the 8 orientations
    counts: Counter = Counter()
    for seed in range(400):
        seed_augment(transform, seed)
        out = transform(_square_sample())
        mask = out["mask"][0].numpy()
        (view,) = [i for i, v in enumerate(views) if np.array_equal(mask, v)]
        assert torch.equal(out["image"][1] > 0.5, out["mask"][0] > 0.5)  # the image turns with its mask
        counts[view] += 1
    assert len(counts) == n_views and min(counts.values()) > 400 / n_views * 0.7, counts


def test_intensity_robustness_is_seeded_and_leaves_the_mask() -> None:
    cfg = AugmentConfig(rotate_deg=0, scale=0, translate=0, affine_prob=0.0, intensity_prob=1.0,
                        gamma=0.3, blur_sigma=1.5, clahe=1.0, noise_std=0.05)
    transform = build_augment(cfg, "binary", 48)
    sample = _square_sample()
    sample["image"] = sample["image"] * 0.3 + 0.2
    outs = []
    for _ in range(2):
        seed_augment(transform, 11)
        outs.append(transform(dict(sample)))
    torch.testing.assert_close(outs[0]["image"], outs[1]["image"])
    assert not torch.allclose(outs[0]["image"], sample["image"])
    assert torch.equal(outs[0]["mask"], sample["mask"])
    assert 0.0 <= float(outs[0]["image"].min()) and float(outs[0]["image"].max()) <= 1.0


# ---------------------------------------------------------------------------- normalisation
def test_percentile_normalisation_equalises_rescaled_slices() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (3, 32, 32)).astype(np.float32)
    dim = (0.4 * x + 0.3).astype(np.float32)  # the same anatomy at another window / contrast
    np.testing.assert_allclose(normalize_unit(x, "percentile"), normalize_unit(dim, "percentile"), atol=1e-5)
    assert normalize_unit(x, "none") is x
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_unit(x, "zscore")


def test_equalize_normalisation_undoes_a_monotone_change_of_scale() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (3, 64, 64)).astype(np.float32)
    other = (0.3 + 0.6 * x**2.2).astype(np.float32)  # another window, contrast and gamma
    a, b = normalize_unit(x, "equalize"), normalize_unit(other, "equalize")
    assert np.abs(x - other).mean() > 0.1
    assert np.abs(a - b).mean() < 0.02  # binning is all that is left
    assert a.dtype == np.float32 and a.shape == x.shape and a.min() == 0.0 and a.max() == 1.0
    flat = np.full((3, 8, 8), 0.3, np.float32)
    np.testing.assert_array_equal(normalize_unit(flat, "equalize"), flat)


def test_clahe_normalisation_raises_local_contrast() -> None:
    yy, xx = np.mgrid[:64, :64]
    flat = (0.45 + 0.05 * np.sin(xx / 3.0) * np.sin(yy / 5.0)).astype(np.float32)[None]
    out = normalize_unit(flat, "clahe")
    assert out.shape == flat.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 3 * flat.std()


def test_window_jitter_moves_hu_windows_only(tmp_path: Path) -> None:
    root = tmp_path / "hu"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 400, (32, 32, 2)).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, np.eye(4)), root / "images" / "a.nii.gz")
    nib.save(nib.Nifti1Image(hu.astype(np.uint8) * 0 + 1, np.eye(4)), root / "labels" / "a.nii.gz")
    nib.save(nib.Nifti1Image((hu // 8 + 128).astype(np.uint8), np.eye(4)), root / "images" / "b.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((32, 32, 2), np.uint8), np.eye(4)), root / "labels" / "b.nii.gz")
    assert hu_bounds(np.dtype(np.int16), WindowConfig(), (-1000.0, 400.0)) == (-1350.0, 150.0)
    assert hu_bounds(np.dtype(np.uint8), WindowConfig(), (0.0, 255.0)) is None
    no_aug = AugmentConfig(rotate_deg=0, scale=0, translate=0, brightness=0, contrast=0)
    for case, jittered in (("a", True), ("b", False)):
        cfg = DataConfig(kind="volume", root=str(root), labels=["labels"], image_size=32, num_workers=0,
                         augment=AugmentConfig(**{**no_aug.__dict__, "window_jitter": 0.2}))
        cases = [c for c in find_cases(cfg) if c.case_id == case]
        plain = SliceDataset(cases, DataConfig(**{**cfg.__dict__, "augment": no_aug}), train=True, seed=0)[0]
        ds = SliceDataset(cases, cfg, train=True, seed=0)
        first = ds[0]["image"]
        ds.set_epoch(1)
        assert torch.equal(first, SliceDataset(cases, cfg, train=True, seed=0)[0]["image"])  # seeded
        assert (not torch.allclose(first, ds[0]["image"])) == jittered
        assert (not torch.allclose(first, plain["image"])) == jittered


# ------------------------------------------------------------------- test split and init-from
def test_test_split_is_scored_and_init_from_fine_tunes(tmp_path: Path) -> None:
    root = make_volumes(tmp_path / "v", n_cases=4, size=64, depth=6)
    cfg = tiny_train_cfg(root, tmp_path / "runs", "train.epochs=1", "data.split.test=[case3]")
    run = trainer.train(cfg)
    summary = json.loads((run / "summary.json").read_text())
    best = torch.load(run / "best.pt", weights_only=True)
    assert summary["test_cases"] == ["case3"] and summary["test_threshold"] == best["threshold"]
    tests = [r for r in train_log(run) if r["kind"] == "test"]
    assert len(tests) == 1 and tests[0]["dice"] == pytest.approx(summary["test_dice"])

    model = create_model_from_config(cfg)
    assert init_from_checkpoint(model, cfg, run / "best.pt") == []
    for key, value in model.trained_state_dict().items():
        torch.testing.assert_close(value, best["state_dict"][key], msg=key)
    other = config_from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "normalize": "percentile"}})
    assert "data.normalize is 'none' there but 'percentile' here" in init_from_checkpoint(create_model_from_config(other), other, run / "best.pt")[0]
    wider = config_from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "decoder_channels": [16, 16, 8]}})
    with pytest.raises(CheckpointError, match=r"model.decoder_channels is \[32, 16, 8\] there but \[16, 16, 8\]"):
        init_from_checkpoint(create_model_from_config(wider), wider, run / "best.pt")
    with pytest.raises(CheckpointError, match="give one"):
        trainer.train(cfg, resume=run, init_from=run / "best.pt")


def _with_data(cfg, **data):
    return config_from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], **data}})


def test_init_from_and_rehearsal_refuse_other_labels_and_name_another_image_kind(tmp_path: Path) -> None:
    root = make_volumes(tmp_path / "v", n_cases=3, size=64, depth=4)
    ct = _with_data(tiny_train_cfg(root, tmp_path / "runs"), label_names=["infection"])
    xray_lungs = _with_data(ct, kind="image", label_names=["lungs"])
    xray_infection = _with_data(ct, kind="image")
    for name, source in (("lungs.pt", xray_lungs), ("infection.pt", xray_infection)):
        atomic_save(model_payload(create_model_from_config(source), source, 0.5, {}), tmp_path / name)
    model = create_model_from_config(ct)

    with pytest.raises(CheckpointError, match=r"lungs\.pt: its labels are \['lungs'\] but this run's are "
                                              r"\['infection'\]; .*--init-relabel"):
        init_from_checkpoint(model, ct, tmp_path / "lungs.pt")
    kind = "data.kind is 'image' (2D pictures) there but 'volume' (volumes) here"
    assert init_from_checkpoint(model, ct, tmp_path / "infection.pt") == [f"--init-from {tmp_path / 'infection.pt'}: {kind}"]
    relabelled = init_from_checkpoint(model, ct, tmp_path / "lungs.pt", relabel=True)
    assert relabelled[:2] == [f"--init-from {tmp_path / 'lungs.pt'}: {kind}",
                              f"--init-from {tmp_path / 'lungs.pt'}: its labels are ['lungs'] but this run's are ['infection']"]

    bundle = build_datasets(ct.data, ct.seed)
    for name, message in (("lungs.pt", rf"{re.escape(kind)}; its labels are \['lungs'\]"), ("infection.pt", re.escape(kind))):
        with pytest.raises(CheckpointError, match=rf"data.rehearse_from .*{name}: {message}.*same kind of images and the same labels"):
            with_rehearsal(bundle, _with_data(ct, rehearse_from=str(tmp_path / name)))


def test_init_from_a_checkpoint_written_before_a_model_key_existed(tmp_path: Path) -> None:
    root = make_volumes(tmp_path / "v", n_cases=3, size=64, depth=4)
    cfg = tiny_train_cfg(root, tmp_path / "runs", "train.epochs=1")
    run = trainer.train(cfg)
    old = torch.load(run / "best.pt", weights_only=True)
    del old["config"]["model"]["prompted"], old["model_args"]["prompted"]  # as written before model.prompted
    torch.save(old, tmp_path / "old.pt")
    assert init_from_checkpoint(create_model_from_config(cfg), cfg, tmp_path / "old.pt") == []
    # a setting the file predates is its default there: asking for another is still refused
    other = config_from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "prompted": {"decoder": "lora"}}})
    with pytest.raises(CheckpointError, match=r"model.prompted is \{'decoder': 'full'"):
        init_from_checkpoint(create_model_from_config(other), other, tmp_path / "old.pt")


# ------------------------------------------------------------------------- CT slice files
class TopRowsModel(ThresholdModel):
    """Foreground in the top half of the rows of whatever the model is given (its own layout)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = torch.full_like(x[:, :1], -20.0)
        logits[:, :, : x.shape[-2] // 2] = 20.0
        return [logits, logits, logits]


def test_slice_as_volume_uses_the_training_layout() -> None:
    picture = np.arange(12).reshape(3, 4)
    for axis in (0, 1, 2):
        vol = slice_as_volume(picture, axis)
        assert vol.shape[axis] == 1 and np.array_equal(np.take(vol, 0, axis=axis), picture.T)


def test_ct_model_segments_a_slice_png_in_the_volume_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"kind": "volume", "image_size": 32, "labels": ["infection"]}})
    _use_model(monkeypatch, cfg, TopRowsModel([0.5], [1.0]))
    Image.fromarray(np.full((40, 24), 90, np.uint8)).save(tmp_path / "slice01.png")
    gt = np.zeros((40, 24), np.uint8)
    gt[:, :12] = 255
    (tmp_path / "gt").mkdir()
    Image.fromarray(gt).save(tmp_path / "gt" / "slice01.png")
    summary = run_inference("fake.pt", tmp_path / "slice01.png", tmp_path / "out", InferenceOptions(gt=tmp_path / "gt", show_progress=False))
    pred = np.asarray(Image.open(tmp_path / "out" / "slice01_pred.png"))
    # The model's rows are the picture's columns (a volume slice displays as its transpose).
    assert pred.shape == (40, 24) and pred[:, :12].min() == 255 and pred[:, 12:].max() == 0
    assert summary["metrics"]["case_mean"]["dice"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "slice01_overlay.png").is_file()


def test_ct_slice_file_gets_the_checkpoint_window(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"kind": "volume", "image_size": 16, "labels": ["infection"]}})
    _use_model(monkeypatch, cfg, ThresholdModel([0.5], [1.0]))
    hu = np.full((16, 16), -1000.0, np.float32)
    hu[:8] = -400.0  # lung window (auto): 0.63 -> foreground; min-max over -1000..1000 it would be 0.3
    hu[15, 15] = 1000.0
    tifffile.imwrite(tmp_path / "s.tif", hu)
    run_inference("fake.pt", tmp_path / "s.tif", tmp_path / "out", InferenceOptions(show_progress=False))
    pred = np.asarray(Image.open(tmp_path / "out" / "s_pred.png")) > 0
    assert pred[:8].all() and not pred[8:15].any()


# -------------------------------------------------------------------------- post-processing
def test_keep_largest_and_fill_holes() -> None:
    mask = np.zeros((2, 20, 20), bool)
    mask[:, 1:9, 1:9] = True  # 64 px
    mask[:, 12:18, 12:18] = True  # 36 px
    mask[:, 0, 19] = True  # a stray pixel
    mask[:, 4, 4] = False  # a hole
    kept = keep_largest_components(mask, [2, 1])
    assert kept[0].sum() == 63 + 36 and kept[1].sum() == 63
    assert np.array_equal(keep_largest_components(mask, [3]), mask)
    assert fill_holes(kept)[:, 4, 4].all() and fill_holes(kept).sum() == kept.sum() + 2
    vol = np.zeros((1, 10, 10, 3), bool)
    vol[0, 2:7, 2:7, 1] = True
    vol[0, 4, 4, 1] = False
    assert fill_holes(vol, slice_axis=2)[0, 4, 4, 1] and fill_holes(vol, slice_axis=2).sum() == 25


def test_infer_applies_the_checkpoints_postprocessing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"kind": "image", "image_size": 32}, "postprocess": {"keep_largest": [1]}})
    _use_model(monkeypatch, cfg, ThresholdModel([0.5], [1.0]))
    image = np.zeros((32, 32), np.uint8)
    image[2:14, 2:14] = 255
    image[24:27, 24:27] = 255  # a stray blob
    Image.fromarray(image).save(tmp_path / "x.png")
    run_inference("fake.pt", tmp_path / "x.png", tmp_path / "a", InferenceOptions(show_progress=False))
    assert (np.asarray(Image.open(tmp_path / "a" / "x_pred.png")) > 0).sum() == 144
    run_inference("fake.pt", tmp_path / "x.png", tmp_path / "b", InferenceOptions(show_progress=False, no_postprocess=True))
    assert (np.asarray(Image.open(tmp_path / "b" / "x_pred.png")) > 0).sum() == 144 + 9
    with pytest.raises(DataError, match="do not combine"):
        run_inference("fake.pt", tmp_path / "x.png", tmp_path / "c",
                      InferenceOptions(show_progress=False, no_postprocess=True, keep_largest=[1]))
