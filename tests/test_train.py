"""Training end to end on tiny synthetic volumes: loss goes down, resume is exact, DDP runs."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from s2unet.config import load_config, save_config
from s2unet.data import SliceDataset, build_datasets, find_cases
from s2unet.engine import rundir, trainer
from s2unet.engine.averaging import WeightAverage, warmed_decay
from s2unet.engine.resume import load_resume
from s2unet.engine.validation import validate
from s2unet.io import OutputError
from s2unet.models.base import SegmentationModel
from s2unet.models.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, load_model_checkpoint
from s2unet.weights import CheckpointError

REPO = Path(__file__).resolve().parents[1]


def make_volumes(root: Path, n_cases: int = 3, size: int = 64, depth: int = 6) -> Path:
    """Bright discs (the 'lesions') on a noisy background, one NIfTI pair per case."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for c in range(n_cases):
        img = rng.integers(0, 90, (size, size, depth)).astype(np.uint8)
        lab = np.zeros((size, size, depth), np.uint8)
        for k in range(depth):
            cy, cx, r = rng.integers(16, size - 16), rng.integers(16, size - 16), rng.integers(5, 12)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img[disc, k] = 200
            lab[disc, k] = 1
        nib.save(nib.Nifti1Image(img, np.diag([0.8, 0.8, 2.0, 1.0])), root / "images" / f"case{c}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.diag([0.8, 0.8, 2.0, 1.0])), root / "labels" / f"case{c}.nii.gz")
    return root


def tiny_train_cfg(data_root: Path, out: Path, *extra: str):
    return load_config(REPO / "configs" / "covid_ct.yaml", [
        f"data.root={data_root}", "data.labels=[labels]", "data.image_size=64", "data.num_workers=0",
        "data.split.mode=list", "data.split.train=[case0, case1]", "data.split.val=[case2]",
        "data.split.test=[]", "model.weights=random", "model.decoder_channels=[32, 16, 8]",
        "train.batch_size=2", "train.steps_per_epoch=3", "train.warmup_steps=2", "train.lr=0.01",
        f"output_dir={out}", "name=t", *extra,
    ])


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    return make_volumes(tmp_path_factory.mktemp("vols"))


def train_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_without_validation_reports_no_best_score(volumes, tmp_path):
    run = trainer.train(tiny_train_cfg(volumes, tmp_path, "train.epochs=1", "data.split.val=[]", "data.split.test=[case2]"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_dice"] is None and summary["best_epoch"] is None
    assert "no validation cases" in summary["note"] and summary["test_threshold"] == 0.5


def test_short_run_lowers_loss_and_writes_records(volumes, tmp_path, capsys):
    run = trainer.train(tiny_train_cfg(volumes, tmp_path, "train.epochs=4"))
    losses = [r["loss"] for r in train_log(run) if r["kind"] == "train"]
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0]
    for name in ("config.yaml", "split.json", "environment.json", "best.pt", "last.pt", "learning_curve.png"):
        assert (run / name).is_file(), name
    assert (tmp_path / "t-latest").resolve() == run.resolve() and not (run / "FAILED").exists()
    assert not (run / ".lock").exists()  # released and removed at the clean finish
    assert json.loads((run / "split.json").read_text())["val"] == ["case2"]
    env = json.loads((run / "environment.json").read_text())
    assert env["seed"] == 0 and "torch" in env["versions"]
    loaded = load_model_checkpoint(run / "best.pt")
    assert 0.05 <= loaded.threshold <= 0.95 and "dice" in loaded.metrics
    # the training cases by content, for compare's overlap check (not the validation case2)
    assert loaded.trained_cases == [
        {"case": c, "sha256": hashlib.sha256(hashlib.sha256((volumes / "images" / f"{c}.nii.gz").read_bytes())
                                             .digest()).hexdigest()} for c in ("case0", "case1")]
    # The checkpoint reproduces its own validation score (its random encoder included).
    val = build_datasets(loaded.config.data, loaded.config.seed).val
    again = validate(loaded.model, loaded.config, val, torch.device("cpu"))
    assert 0.0 < again["summary"]["dice"] == pytest.approx(loaded.metrics["dice"], abs=1e-6)
    # Calibrated on validation: the temperature travels in best.pt, and predicting with it at the
    # stored threshold (as infer.py does) gives the validation score again.
    assert loaded.calibration.fitted and loaded.calibration == again["calibration"]
    stored = validate(loaded.model, loaded.config, val, torch.device("cpu"), threshold=loaded.threshold,
                      calibration=loaded.calibration)
    assert stored["summary"]["dice"] == pytest.approx(loaded.metrics["dice"], abs=1e-4)
    val_records = [r for r in train_log(run) if r["kind"] == "val"]
    assert all(0.0 <= r["threshold_flatness"] <= 1.0 and r["temperature"] > 0 for r in val_records)
    assert loaded.metrics["threshold_flatness"] in [r["threshold_flatness"] for r in val_records]
    done = " ".join(capsys.readouterr().err.split()).split("done: ")[-1]
    assert f"threshold {loaded.threshold:.2f}, Dice range {loaded.metrics['threshold_flatness']:.3f}" in done


@pytest.mark.parametrize("extra", [[], ["train.ema=0.9"]], ids=["plain", "weight_average"])
def test_resume_ends_where_an_uninterrupted_run_ends(volumes, tmp_path, extra):
    cfg = tiny_train_cfg(volumes, tmp_path / "a", "train.epochs=2", "data.lesion_oversample=0.5", *extra)
    full = trainer.train(cfg)

    class InterruptedAfterFirstEpoch(trainer.Trainer):
        def on_epoch_end(self, record, bar):
            super().on_epoch_end(record, bar)
            raise KeyboardInterrupt

    cfg_b = tiny_train_cfg(volumes, tmp_path / "b", "train.epochs=2", "data.lesion_oversample=0.5", *extra)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(cfg_b, trainer_class=InterruptedAfterFirstEpoch)
    interrupted = next((tmp_path / "b").iterdir())
    resumed = trainer.train(cfg_b, resume=interrupted)

    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    assert a["progress"] == b["progress"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert ("ema" in a) == bool(extra)
    for key, value in a.get("ema", {}).get("state_dict", {}).items():
        assert torch.equal(value, b["ema"]["state_dict"][key]), key
    assert train_log(full) == [{**r, "images_per_s": a_r["images_per_s"]} if "images_per_s" in r else r
                               for r, a_r in zip(train_log(resumed), train_log(full))]


def test_weight_average_is_what_is_validated_and_saved(volumes, tmp_path):
    run = trainer.train(tiny_train_cfg(volumes, tmp_path, "train.epochs=1", "train.ema=0.5"))
    best = torch.load(run / "best.pt", weights_only=True)
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["ema"]["n_averaged"] == 3  # one update per optimiser step
    trained = [k for k in last["state_dict"] if "decoder" in k and k.endswith("weight")]
    assert trained and all(torch.equal(best["state_dict"][k], last["ema"]["state_dict"][k]) for k in trained)
    assert any(not torch.equal(best["state_dict"][k], last["state_dict"][k]) for k in trained)


def test_train_threads_apply_to_the_run_and_are_restored_after_it(volumes, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run = trainer.train(tiny_train_cfg(volumes, tmp_path, "train.epochs=1", "train.steps_per_epoch=1",
                                           "train.threads=1"))
        assert json.loads((run / "summary.json").read_text())["threads"] == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_weight_average_warms_up_its_decay():
    layer = torch.nn.Linear(1, 1, bias=False)
    average = WeightAverage(layer, decay=0.9)
    for value in (1.0, 3.0, 5.0):
        layer.weight.data.fill_(value)
        average.update(layer)
    # the first update copies; then decays (1 + n) / (10 + n) = 2/11 and 3/12, below 0.9
    after_two = 2 / 11 * 1.0 + 9 / 11 * 3.0
    assert average.model.weight.item() == pytest.approx(0.25 * after_two + 0.75 * 5.0)
    assert warmed_decay(0.9, 1000) == 0.9
    with pytest.raises(ValueError, match="train.ema must be in"):
        WeightAverage(layer, decay=1.0)


def test_resume_without_last_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no last.pt"):
        trainer.train(load_config(None), resume=tmp_path)


def test_two_process_ddp_step(volumes, tmp_path):
    cfg = REPO / "configs" / "covid_ct.yaml"
    sets = [f"data.root={volumes}", "data.labels=[labels]", "data.image_size=64", "data.num_workers=0",
            "data.split.mode=list", "data.split.train=[case0, case1]", "data.split.val=[case2]",
            "data.split.test=[]", "model.weights=random", "model.decoder_channels=[32, 16, 8]",
            "train.batch_size=1", "train.steps_per_epoch=2", "train.epochs=1", f"output_dir={tmp_path}",
            "name=ddp", "train.threads=1"]
    # --standalone rendezvous on a free port: a fixed one clashes with other runs on the machine
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "train.py"), "--config", str(cfg)] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [p for p in tmp_path.iterdir() if not p.is_symlink()]
    assert len(runs) == 1  # both ranks wrote into the one directory rank 0 named
    assert (tmp_path / "ddp-latest").resolve() == runs[0].resolve()
    log = train_log(runs[0])
    assert [r["step"] for r in log if r["kind"] == "train"] == [2]
    env_json = json.loads((runs[0] / "environment.json").read_text())
    assert env_json["world_size"] == 2


@pytest.mark.parametrize("amp", ["off", "bf16"])  # bf16 is emulated where the CPU lacks it: slow, but tiny here
def test_decoder_only_run_with_feature_cache(volumes, tmp_path, amp):
    cfg = tiny_train_cfg(volumes, tmp_path, "train.epochs=2", "model.adapter.placement=none",
                         "data.augment.enabled=false", "train.feature_cache_mb=0", f"train.amp={amp}")
    run = trainer.train(cfg)
    losses = [r["loss"] for r in train_log(run) if r["kind"] == "train"]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert not (run / "feature_cache_rank0").exists()  # spilled features are removed at the end
    assert json.loads((run / "summary.json").read_text())["precision"] == ("bf16" if amp == "bf16" else "fp32")


# ------------------------------------------------------------------ run directory bookkeeping
def test_failed_run_leaves_latest_where_it_was_and_is_marked(volumes, tmp_path, disk_full_at):
    earlier = tmp_path / "t-earlier"
    earlier.mkdir()
    (tmp_path / "t-latest").symlink_to(earlier.name)
    disk_full_at("best.pt")  # the disk fills up when the first checkpoint is written
    with pytest.raises(OSError, match="No space left") as err:
        trainer.train(tiny_train_cfg(volumes, tmp_path, "train.epochs=1", "train.steps_per_epoch=1"))
    assert err.value.filename.endswith("best.pt") and "/.tmp" not in err.value.filename  # the real name
    assert (tmp_path / "t-latest").resolve() == earlier.resolve()
    failed = next(p for p in tmp_path.iterdir() if p.name not in ("t-latest", "t-earlier"))
    assert not (failed / "best.pt").exists() and not (failed / "summary.json").exists()
    assert (failed / "FAILED").read_text().startswith("OSError: [Errno 28] No space left on device")
    with rundir.hold_run_dir(failed):  # the failed process let go of the directory
        pass


def test_real_latest_directory_is_refused_before_training(volumes, tmp_path, monkeypatch):
    (tmp_path / "t-latest").mkdir()

    def no_model(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(trainer, "create_model_from_config", no_model)
    with pytest.raises(OutputError, match=r"t-latest is a real folder.*`name`"):
        trainer.train(tiny_train_cfg(volumes, tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["t-latest"]  # no run directory either


def test_resume_of_a_run_directory_in_use_is_refused(volumes, tmp_path):
    cfg = tiny_train_cfg(volumes, tmp_path)
    run = _fake_run(tmp_path / "t-20240101-000000", cfg, cfg)
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 9}\n')
    with rundir.hold_run_dir(run):  # another training process
        with pytest.raises(OutputError, match=rf"run directory {run} is in use by process {os.getpid()}"):
            trainer.train(cfg, resume=run)
    assert (run / "metrics.jsonl").read_text() == '{"kind": "train", "step": 9}\n'
    assert not (run / "FAILED").exists()  # the refused process wrote nothing into the other's run


def test_stage_adapter_run_under_bf16(volumes, tmp_path):
    run = trainer.train(tiny_train_cfg(volumes, tmp_path, "train.epochs=1", "model.adapter.placement=stage",
                                       "train.amp=bf16"))
    assert json.loads((run / "summary.json").read_text())["precision"] == "bf16"
    losses = [r["loss"] for r in train_log(run) if r["kind"] == "train"]
    assert len(losses) == 1 and np.isfinite(losses[0])
    loaded = load_model_checkpoint(run / "best.pt")
    assert all(torch.isfinite(v).all() for v in loaded.model.state_dict().values() if v.is_floating_point())


class _BrightIsForeground(SegmentationModel):
    """Logits from the input intensity: bright pixels are foreground, exactly."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = 20.0 * (x[:, :1] - 0.5)
        return [logits, logits, logits]


def test_validation_reports_cases_with_an_empty_reference(tmp_path):
    from PIL import Image

    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    image, mask = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    image[8:24, 8:24] = 255
    mask[8:24, 8:32] = 255  # predicted 16 x 16 of a 16 x 24 reference: Dice 0.8
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "images" / "b.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "masks" / "b.png")  # empty, nothing predicted
    cfg = load_config(None, [f"data.root={tmp_path}", "data.image_size=64"])
    dataset = SliceDataset(find_cases(cfg.data), cfg.data, train=False)
    summary = validate(_BrightIsForeground(), cfg, dataset, torch.device("cpu"))["summary"]
    assert summary["dice"] == pytest.approx((0.8 + 1.0) / 2)  # the empty case is in the mean as 1 ...
    assert summary["n_cases_empty_gt"] == 1  # ... and said so, with the mean without it
    assert summary["with_gt_dice"] == pytest.approx(0.8)
    curve = summary["dice_by_threshold"]  # the tuning curve is kept, one mean per threshold
    assert len(curve) == 19 and curve["0.05"] == curve["0.50"] == curve["0.95"] == pytest.approx(0.9)


class _BrightIsBoth(SegmentationModel):
    """Two labels, both predicted where the input is bright."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = 20.0 * (x[:, :1] - 0.5).repeat(1, 2, 1, 1)
        return [logits, logits, logits]


def test_validation_leaves_an_empty_label_out_of_that_labels_mean(tmp_path):
    from PIL import Image

    square = np.zeros((64, 64), np.uint8)
    square[8:24, 8:24] = 255
    wider = np.zeros((64, 64), np.uint8)
    wider[8:24, 8:32] = 255
    masks = {"lungs": {"a": wider, "b": square}, "heart": {"a": square, "b": np.zeros_like(square)}}
    for sub in ("images", "masks/lungs", "masks/heart"):
        (tmp_path / sub).mkdir(parents=True)
    for case in ("a", "b"):
        Image.fromarray(square).save(tmp_path / "images" / f"{case}.png")
        for label, by_case in masks.items():
            Image.fromarray(by_case[case]).save(tmp_path / "masks" / label / f"{case}.png")
    cfg = load_config(None, [f"data.root={tmp_path}", "data.image_size=64", "data.task=multilabel",
                             "data.labels=[masks/lungs, masks/heart]"])
    dataset = SliceDataset(find_cases(cfg.data), cfg.data, train=False)
    summary = validate(_BrightIsBoth(), cfg, dataset, torch.device("cpu"), threshold=0.5)["summary"]
    # a: lungs 0.8, heart 1; b: lungs 1, heart predicted on an empty reference: 0
    assert summary["dice"] == pytest.approx((0.8 + 1.0 + 1.0 + 0.0) / 4)
    assert summary["n_cases_empty_gt"] == 1
    assert summary["n_cases_empty_gt/heart"] == 1 and summary["n_cases_empty_gt/lungs"] == 0
    assert summary["with_gt_dice/heart"] == pytest.approx(1.0)
    assert summary["with_gt_dice"] == pytest.approx(((0.8 + 1.0) / 2 + 1.0) / 2)


def test_the_validation_note_names_the_empty_reference_per_label():
    from s2unet.engine.trainer import _empty_reference_note

    binary = {"n_cases_empty_gt": 1, "with_gt_dice": 0.8}
    assert _empty_reference_note(binary, 2, "dice") == (
        "; 1 with an empty reference, scored 1 if nothing is predicted else 0; without them 0.8000")
    assert _empty_reference_note({"n_cases_empty_gt": 0}, 2, "dice") == ""
    multilabel = {"n_cases_empty_gt": 2, "n_cases_empty_gt/lungs": 0, "n_cases_empty_gt/heart": 2,
                  "n_cases_empty_gt/clavicle": 1, "with_gt_dice": 0.7}
    assert _empty_reference_note(multilabel, 10, "dice") == (
        "; empty references: heart in 2 of 10 cases, clavicle in 1 of 10, scored 1 if nothing is predicted else 0; "
        "without them per label 0.7000")


def _fake_run(run_dir: Path, last_cfg, yaml_cfg, epochs_done: int = 1) -> Path:
    """A run directory with a last.pt (config and progress, no tensors) and a config.yaml."""
    run_dir.mkdir(parents=True)
    atomic_save({"format": FORMAT, "format_version": FORMAT_VERSION, "config": last_cfg.to_dict(),
                 "model_args": {}, "state_dict": {},
                 "progress": {"epoch": epochs_done, "step": 3, "best": 0.5, "best_epoch": 1}}, run_dir / "last.pt")
    save_config(yaml_cfg, run_dir / "config.yaml")
    return run_dir


def test_resume_refuses_config_and_unsafe_overrides(tmp_path, capsys):
    from s2unet.cli import main

    cfg = load_config(None, ["model.weights=random", "train.epochs=3"])
    run = _fake_run(tmp_path / "run", cfg, cfg, epochs_done=2)
    assert main(["--resume", str(run), "--config", str(REPO / "configs" / "covid_ct.yaml")], command="train") == 2
    assert "--config cannot change it" in capsys.readouterr().err
    assert main(["--resume", str(run), "--set", "model.encoder=mobilesam_tinyvit"], command="train") == 2
    err = capsys.readouterr().err
    assert "--set model.encoder would change the run" in err and "train.epochs" in err
    assert main(["--resume", str(run), "--set", "train.epochs=1"], command="train") == 2
    assert "already completed 2 epochs" in capsys.readouterr().err
    point = load_resume(run, ["train.epochs=5", "train.threads=1"])
    assert (point.config.train.epochs, point.config.train.threads) == (5, 1)


def test_resume_refuses_a_last_checkpoint_that_disagrees_with_config_yaml(tmp_path):
    base = ["model.weights=random"]
    run = _fake_run(tmp_path / "run", load_config(None, [*base, "model.encoder=mobilesam_tinyvit", "train.epochs=2"]),
                    load_config(None, [*base, "train.epochs=4"]))
    with pytest.raises(CheckpointError, match=r"model\.encoder: 'mobilesam_tinyvit' in last\.pt, 'sam2\.1_hiera_tiny' in config\.yaml") as err:
        trainer.train(None, resume=run)
    assert "train.epochs" not in str(err.value)  # a resume-safe key may differ


def test_resume_extends_a_finished_run(volumes, tmp_path, capsys, monkeypatch):
    run = trainer.train(tiny_train_cfg(volumes, tmp_path, "train.epochs=1"))
    capsys.readouterr()
    rates: list[float] = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    assert trainer.train(None, resume=run, resume_overrides=["train.epochs=2"]) == run
    assert "applied train.epochs 1 -> 2" in capsys.readouterr().err
    # The first step after resuming follows the stretched schedule (step 3 of 6, warm-up 2),
    # not the rate 0 the one-epoch schedule had ended at.
    assert rates[0] == pytest.approx(0.01 * trainer.lr_lambda(2, 6)(3)) and rates[0] > 0.008
    assert [r["epoch"] for r in train_log(run) if r["kind"] == "train"] == [1, 2]
    assert load_config(run / "config.yaml").train.epochs == 2
    assert torch.load(run / "last.pt", weights_only=True)["config"]["train"]["epochs"] == 2
    # A last.pt without its random encoder (written before encoders were stored) is refused.
    saved = torch.load(run / "last.pt", weights_only=True)
    saved["state_dict"] = {k: v for k, v in saved["state_dict"].items() if not k.startswith("encoder.trunk.")}
    torch.save(saved, run / "last.pt")
    with pytest.raises(CheckpointError, match=r"last\.pt was trained with model.weights: random"):
        trainer.train(None, resume=run, resume_overrides=["train.epochs=3"])
