"""Volumes labelled on some slices only: the label app's manifest and the datasets that honour it."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from s2unet.app.workspace import OpenCase, layers_from, list_cases, save_masks
from s2unet.baselines.compare import comparison_cases
from s2unet.baselines.compare_config import CompareConfig
from s2unet.config import DataConfig, SplitConfig, load_config
from s2unet.data import DataError, SliceDataset, build_datasets, find_cases, read_labelled_slices
from s2unet.data.labelled import write_case_slices
from s2unet.engine.validation import validate
from s2unet.io.case import ORIENTATION
from s2unet.models import SegmentationModel

# Voxel axes (S, P, L), so the served (L-P-I) volume is a permutation of the stored one.
OBLIQUE = np.array([[0.0, 0.0, -1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def _labelled_in_the_app(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Two 6-slice volumes saved by the app: ``a`` labelled on served slices 1 (a lesion) and
    4 (reviewed, empty), ``b`` on every slice."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b"):
        nib.save(nib.Nifti1Image(np.random.default_rng(0).integers(0, 255, (6, 8, 8)).astype(np.uint8), OBLIQUE),
                 src / f"{name}.nii.gz")
    out = tmp_path / "out"
    cases = {c.case_id: c for c in list_cases(src)}
    lesion = None
    for name, slices in (("a", [1, 4]), ("b", None)):
        opened = OpenCase(cases[name])
        masks = np.zeros((1, opened.n_slices, *opened.plane_shape), dtype=bool)
        masks[0, :, 2:4, 2:5] = True  # foreground on every slice: only the labelled ones may train
        masks[0, 4] = False
        labelled = np.ones(opened.n_slices, bool)
        if slices is not None:
            labelled[:] = False
            labelled[slices] = True
            lesion = masks[0, 1].T  # the served slice is the display plane transposed
        save_masks(out, layers_from(["lesion"]), opened, masks, labelled, overwrite=False)
    return out, lesion


def _cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(kind="volume", root=str(root), images="images", labels=["masks/lesion"], image_size=8,
                      split=SplitConfig(mode="list", train=["a", "b"], val=[], test=[]), **kw)


def test_only_the_labelled_slices_of_an_app_saved_volume_train(tmp_path: Path) -> None:
    out, lesion = _labelled_in_the_app(tmp_path)
    train = build_datasets(_cfg(out), seed=0).train
    a = [train.items[i] for i in train.case_items("a")]
    assert a == [("a", 1), ("a", 4)]
    assert len(train.case_items("b")) == 6  # not listed: labelled whole
    np.testing.assert_array_equal(train.lesion_flags(), [True, False] + [True] * 4 + [False] + [True])
    served = train[train.case_items("a")[0]]["mask"][0].numpy() > 0
    np.testing.assert_array_equal(served, lesion)  # the app's slice 1 is training's slice 1
    whole = build_datasets(_cfg(out, labelled_slices=""), seed=0).train  # "" reads no manifest
    assert len(whole.case_items("a")) == 6


@pytest.mark.parametrize("manifest, message", [
    ({"axis": 0, "reorient": True, "orientation": ORIENTATION, "cases": {"a": [1]}}, "along axis 0"),
    ({"axis": 2, "reorient": True, "orientation": ORIENTATION, "cases": {"zz": [1]}}, r"\['zz'\] that are not in"),
    ({"axis": 2, "reorient": True, "orientation": ORIENTATION, "cases": {"a": [9]}}, r"'a' lists slice\(s\) \[9\] but has 6 slices"),
    ({"axis": 2, "reorient": True, "orientation": ORIENTATION, "cases": {"a": []}}, "'a' lists no labelled slice"),
    ({"axis": 2, "reorient": True, "orientation": ORIENTATION, "cases": {"a": ["1"]}}, "must list slice indices"),
    ({"axis": 2, "cases": {"a": [1]}}, "'reorient' true or false"),
    ({"axis": 2, "reorient": True, "orientation": "ras", "cases": {"a": [1]}}, "'orientation' must be one of"),
    # written before the convention: its indices count the closest-RAS volume, the other way up
    ({"axis": 2, "reorient": True, "cases": {"a": [1]}}, "orientation ras-v0 \\(written before the orientation "
                                                          "convention\\), but this data is sliced .* radiological-v1"),
])
def test_a_bad_manifest_is_refused_naming_the_file(tmp_path: Path, manifest: dict, message: str) -> None:
    out, _ = _labelled_in_the_app(tmp_path)
    (out / "labelled_slices.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=message) as err:
        build_datasets(_cfg(out), seed=0)
    assert "labelled_slices.json" in str(err.value)


def test_a_named_manifest_must_exist_and_the_writer_keeps_other_cases(tmp_path: Path) -> None:
    out, _ = _labelled_in_the_app(tmp_path)
    with pytest.raises(DataError, match="data.labelled_slices: .*missing.json does not exist"):
        build_datasets(_cfg(out, labelled_slices="missing.json"), seed=0)
    path = out / "labelled_slices.json"
    assert json.loads(path.read_text())["cases"] == {"a": [1, 4]}  # b, labelled whole, is not listed
    write_case_slices(path, "b", [5, 0, 5], axis=2, reorient=True, orientation=ORIENTATION)
    assert json.loads(path.read_text())["cases"] == {"a": [1, 4], "b": [0, 5]}
    write_case_slices(path, "a", None, axis=2, reorient=True, orientation=ORIENTATION)  # labelled whole after all
    assert json.loads(path.read_text())["cases"] == {"b": [0, 5]}
    with pytest.raises(DataError, match="counts slices along axis 2"):
        write_case_slices(path, "b", [1], axis=1, reorient=True, orientation=ORIENTATION)


class _BrightIsForeground(SegmentationModel):
    """Logits from the input intensity: bright pixels are foreground, exactly."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = 20.0 * (x[:, :1] - 0.5)
        return [logits, logits, logits]


def test_validation_scores_only_the_labelled_slices(tmp_path: Path) -> None:
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    image = np.zeros((32, 32, 4), np.uint8)
    image[8:16, 8:16] = 255  # a bright square on every slice, predicted on every slice
    mask = np.zeros_like(image)
    mask[8:16, 8:16, 1] = 1  # only slice 1 was labelled
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "images" / "v.nii.gz")
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "masks" / "v.nii.gz")
    cfg = load_config(None, [f"data.root={tmp_path}", "data.kind=volume", "data.image_size=32"])
    cases = find_cases(cfg.data)

    def dice() -> float:
        dataset = SliceDataset(cases, cfg.data, train=False, labelled=read_labelled_slices(cfg.data, ["v"]))
        return validate(_BrightIsForeground(), cfg, dataset, torch.device("cpu"), threshold=0.5)["summary"]["dice"]

    assert dice() == pytest.approx(2 * 1 / (4 + 1))  # the unlabelled slices count as missed background
    # The RAS-stored slice 1 of 4 is served slice 2: served volumes count axial slices from the head down.
    write_case_slices(tmp_path / "labelled_slices.json", "v", [2], axis=2, reorient=True, orientation=ORIENTATION)
    assert dice() == pytest.approx(1.0)


def test_compare_refuses_partially_labelled_volumes(tmp_path: Path) -> None:
    out, _ = _labelled_in_the_app(tmp_path)
    cfg = CompareConfig(data=_cfg(out))
    with pytest.raises(DataError, match=r"labelled_slices.json: cases \['a'\] are labelled on some slices only"):
        comparison_cases(cfg)
