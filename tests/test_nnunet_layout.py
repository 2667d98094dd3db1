"""nnU-Net v2 dataset layouts: imagesTr/labelsTr with _0000 channel suffixes and dataset.json
labels train, imagesTs is inferred, and nnU-Net-named prediction folders are evaluated."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from s2unet.config import ConfigError, load_config
from s2unet.data import DataError, find_cases
from s2unet.engine import trainer
from s2unet.inference import evaluate, InferenceOptions, run_inference
from s2unet.models.checkpoint import load_model_checkpoint

REPO = Path(__file__).resolve().parents[1]
AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])


def make_nnunet_dataset(root: Path, n_train: int = 3, size: int = 64, depth: int = 4) -> Path:
    """Dataset001_Shapes: a bright disc (label 1) and a dimmer square (label 2) per slice."""
    rng = np.random.default_rng(0)
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / folder).mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for c in range(n_train + 1):
        img = rng.integers(0, 60, (size, size, depth)).astype(np.int16)
        lab = np.zeros((size, size, depth), np.uint8)
        for k in range(depth):
            cy, cx = rng.integers(14, size - 14, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 49
            sy, sx = rng.integers(2, size - 14, 2)
            square = np.zeros((size, size), bool)
            square[sy:sy + 12, sx:sx + 12] = True
            square &= ~disc
            img[disc, k], img[square, k] = 220, 140
            lab[disc, k], lab[square, k] = 1, 2
        split = "Tr" if c < n_train else "Ts"
        nib.save(nib.Nifti1Image(img, AFFINE), root / f"images{split}" / f"case{c}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab, AFFINE), root / f"labels{split}" / f"case{c}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "disc": 1, "square": 2},
        "numTraining": n_train, "file_ending": ".nii.gz"}))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_nnunet_dataset(tmp_path_factory.mktemp("nnunet") / "Dataset001_Shapes")


def nnunet_cfg(root: Path, out: Path, *extra: str):
    return load_config(REPO / "configs" / "covid_ct.yaml", [
        f"data.root={root}", "data.images=imagesTr", "data.image_size=64", "data.num_workers=0",
        "data.split.mode=list", "data.split.train=[case0, case1]", "data.split.val=[case2]", "data.split.test=[]",
        "model.weights=random", "model.decoder_channels=[32, 16, 8]", "train.batch_size=2", "train.epochs=1",
        "train.steps_per_epoch=3", "train.warmup_steps=1", f"output_dir={out}", "name=nn", *extra,
    ])


def test_dataset_json_labels_set_the_task_and_cases_pair_without_the_channel_suffix(dataset, tmp_path) -> None:
    cfg = nnunet_cfg(dataset, tmp_path)
    d = cfg.data
    assert (d.task, d.num_classes, d.label_names, d.labels, d.kind) == (
        "multiclass", 3, ["background", "disc", "square"], ["labelsTr"], "volume")
    cases = find_cases(d)
    assert [c.case_id for c in cases] == ["case0", "case1", "case2"]
    assert cases[0].labels == [dataset / "labelsTr" / "case0.nii.gz"] and not cases[0].missing_labels()
    assert load_config(None, [f"data.root={dataset}", "data.images=imagesTr", "data.task=binary",
                              "data.label_names=[disc]"]).data.task == "binary"  # --set still wins


def test_an_nnunet_dataset_trains_infers_imagests_and_is_evaluated(dataset, tmp_path) -> None:
    run = trainer.train(nnunet_cfg(dataset, tmp_path))
    assert load_model_checkpoint(run / "best.pt").config.data.label_names == ["background", "disc", "square"]
    summary = run_inference(run / "best.pt", dataset / "imagesTs", tmp_path / "s2unet_pred",
                            InferenceOptions(gt=dataset / "labelsTs", surface=False, show_progress=False))
    assert summary["cases"] == ["case3"] and (tmp_path / "s2unet_pred" / "case3_pred.nii.gz").is_file()
    # A folder named as nnU-Net names its predictions: <case>.nii.gz
    nnunet_pred = tmp_path / "nnunet_pred"
    nnunet_pred.mkdir()
    shutil.copy(tmp_path / "s2unet_pred" / "case3_pred.nii.gz", nnunet_pred / "case3.nii.gz")
    (nnunet_pred / "plans.json").write_text("{}")  # nnU-Net writes these beside its predictions
    scores = evaluate(nnunet_pred, dataset / "labelsTs", tmp_path / "eval", surface=False)
    again = evaluate(tmp_path / "s2unet_pred", dataset / "labelsTs", tmp_path / "eval2", surface=False)
    assert scores["metrics"]["case_mean"]["dice"] == again["metrics"]["case_mean"]["dice"]
    assert scores["cases"] == ["case3"]


def test_evaluate_lists_every_accepted_prediction_name(tmp_path) -> None:
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "notes.txt").write_text("x")
    with pytest.raises(DataError) as err:
        evaluate(tmp_path / "pred", tmp_path, tmp_path / "eval")
    message = str(err.value)
    for name in ("<case>_pred<suffix>", "<case>_pred_<label><suffix>", "<case><suffix> (nnU-Net)",
                 ".nii.gz", ".mha", ".nrrd", ".png"):
        assert name in message


def test_nnunet_refusals(dataset, tmp_path) -> None:
    copy = tmp_path / "Dataset002"
    shutil.copytree(dataset, copy)
    shutil.copy(copy / "imagesTr" / "case0_0000.nii.gz", copy / "imagesTr" / "case0_0001.nii.gz")
    with pytest.raises(DataError, match=r"case0_0001.nii.gz: channel 0001: s2unet reads one channel per case"):
        find_cases(nnunet_cfg(copy, tmp_path).data)
    (copy / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": [1, 2]}}))
    with pytest.raises(ConfigError, match=r"labels \['lesion'\] are regions"):
        nnunet_cfg(copy, tmp_path)
    (copy / "dataset.json").unlink()
    with pytest.raises(ConfigError, match=r"nnU-Net v2 layout, but its dataset.json \(.*Dataset002/dataset.json\) does not exist"):
        nnunet_cfg(copy, tmp_path)
