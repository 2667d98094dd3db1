"""The comparison: table writer content and oracle marking, iterative summaries, config
validation, the shipped configs, and two end-to-end runs on tiny synthetic data sets (images and
NIfTI volumes) with a stand-in prompted predictor and a real (untrained) U-Net checkpoint."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from s2unet.baselines import sam_predictors
from s2unet.baselines.compare import load_compare_config, run_compare
from s2unet.baselines.compare_data import middle_block
from s2unet.baselines.report import (
    ORACLE_MARK,
    MethodResult,
    click_table,
    comparison_rows,
    iterative_summary,
    markdown_table,
    write_comparison,
)
from s2unet.baselines.sam_predictors import PromptedPredictor
from s2unet.config import ConfigError, config_from_dict
from s2unet.models import create_model_from_config
from s2unet.models.checkpoint import atomic_save, model_payload

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ table writer
def _summary(dice: float) -> dict:
    keys = {"dice": dice, "iou": dice / 2, "sensitivity": 0.9, "specificity": 0.99, "hd95": 3.25, "nsd": 0.8}
    return {
        "n_cases": 2, "case_mean": keys, "case_std": {k: 0.01 for k in keys},
        "n_slices": 10, "slice_mean": {"dice": dice - 0.1}, "n_slices_with_gt": 8,
        "slice_mean_with_gt": {"dice": dice - 0.05},
    }


@pytest.fixture
def results() -> list[MethodResult]:
    return [
        MethodResult("s2unet", "trained", False, summary=_summary(0.8), seconds_per_image=0.25,
                     trainable_parameters=807132),
        MethodResult("litemedsam-box", "zero-shot", True, summary=_summary(0.9), seconds_per_image=2.0),
        MethodResult("unet", "trained", False, status="skipped", reason="checkpoint runs/x/best.pt not found"),
    ]


def test_markdown_marks_oracles_and_lists_skipped_methods(results: list[MethodResult]) -> None:
    md = markdown_table(results, volumes=True)
    lines = md.splitlines()
    assert lines[0].startswith(
        "| method | GT prompts | Dice (case mean ± sd) | Dice (slice mean) | Dice (slices with GT)")
    assert "| s2unet | no | 0.800 ± 0.010 | 0.700 | 0.750 | 0.400 | 0.900 | 0.990 | 3.2 | 0.25 | 807,132 |" in lines
    assert f"| litemedsam-box {ORACLE_MARK} | yes | 0.900 ± 0.010 |" in md
    assert "- **unet** (skipped): checkpoint runs/x/best.pt not found" in md
    assert lines[-1].startswith(f"{ORACLE_MARK} oracle:")
    assert "slice" not in markdown_table(results, volumes=False).splitlines()[0]


def test_csv_rows_carry_the_oracle_column_and_every_metric(results: list[MethodResult]) -> None:
    rows = comparison_rows(results)
    assert [r["prompts_from_ground_truth"] for r in rows] == ["no", "yes", "no"]
    assert rows[0]["dice"] == 0.8 and rows[0]["dice_std"] == 0.01 and rows[0]["hd95"] == 3.25
    assert rows[0]["dice_slice_mean"] == pytest.approx(0.7)
    assert rows[0]["dice_slice_mean_with_gt"] == pytest.approx(0.75)
    assert rows[0]["trainable_parameters"] == 807132 and rows[1]["trainable_parameters"] == 0
    assert rows[2]["status"] == "skipped" and "dice" not in rows[2]


def test_written_csvs_escape_formulas_and_a_full_disk_leaves_no_partial_set(
    results: list[MethodResult], tmp_path: Path, disk_full_at
) -> None:
    results[0].name = "=HYPERLINK(1)"  # method names are free text from the config
    per_case = [{"method": "=HYPERLINK(1)", "case": "-case01", "dice": 0.8}]
    write_comparison(tmp_path, results, per_case, volumes=False)
    assert _read_csv(tmp_path / "comparison.csv")[0]["method"] == "'=HYPERLINK(1)"
    assert _read_csv(tmp_path / "per_case.csv")[0] == {"method": "'=HYPERLINK(1)", "case": "'-case01", "dice": "0.8"}
    (tmp_path / "notes.txt").write_text("kept")
    disk_full_at("dice_boxplot.png")  # the disk fills up after the tables were replaced
    with pytest.raises(OSError, match="No space left"):
        write_comparison(tmp_path, results, per_case, volumes=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_iterative_summary_counts_clicks_to_target() -> None:
    curve = iterative_summary([[0.5, 0.92, 0.95], [0.2, 0.4, 0.6]])
    assert curve["clicks"] == [1, 2, 3]
    np.testing.assert_allclose(curve["mean_dice"], [0.35, 0.66, 0.775])
    assert curve["share_reaching_target"] == [0.0, 0.5, 0.5]
    assert curve["mean_clicks_to_target"] == 2.5  # 2 clicks, and the cap of 3 for the other
    assert curve["never_reached"] == 0.5
    assert curve["budget_clicks"] == 3 and curve["share_within_budget"] == 0.5  # fewer clicks than 11 ran


def test_click_table_counts_only_the_first_eleven_clicks() -> None:
    late = [0.5] * 11 + [0.95]  # reaches 0.90 at click 12: outside the budget
    curves = {"sam-iter": iterative_summary([late, [0.95] * 12])}
    assert curves["sam-iter"]["budget_clicks"] == 11 and curves["sam-iter"]["share_within_budget"] == 0.5
    table = click_table(curves)
    assert "| sam-iter † | 2 | 12 | 6.5 | 50% |" in table  # (12 + 1) / 2 clicks to 0.90
    assert click_table({"one-shot": iterative_summary([])}) == ""


# ------------------------------------------------------------------------------------ config
def _write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_errors_name_the_method(tmp_path: Path) -> None:
    base = "data: {root: .}\nmethods:\n"
    cases = {
        "  - {name: a, checkpoint: x.pt, predictor: litemedsam}\n": "either checkpoint",
        "  - {name: a, predictor: litemedsam, prompt: boxes}\n": "'boxes' is not a registered prompt strategy",
        "  - {name: a, predictor: litemedsam, prompt: draft_boxes}\n": "draft_boxes and the draft",
        "  - {name: a, predictor: nosuch}\n": "'nosuch' is not a registered prompted predictor",
        "  - {name: a, checkpoint: x.pt}\n  - {name: a, checkpoint: y.pt}\n": "used twice",
        "  - {name: a, predictor: litemedsam, prompt: box_whole, jiter: 1}\n": "did you mean methods\\[0\\].jitter",
        "  - {name: a, predictor: litemedsam, prompt: iterative, jitter: 0.1}\n": "methods\\[0\\].jitter.*prompt iterative",
        "  - {name: a, checkpoint: x.pt, jitter: 0.1}\n": "trained checkpoint takes name and checkpoint",
        "  - {name: a, predictor: litemedsam, rounds: -1, prompt: iterative}\n": "methods\\[0\\].rounds must be >= 0",
    }
    for body, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_compare_config(_write_yaml(tmp_path / "c.yaml", base + body))
    good = _write_yaml(tmp_path / "g.yaml", base + "  - {name: a, checkpoint: x.pt}\n")
    with pytest.raises(ConfigError, match=r"--set 'max_cases=-1': max_cases must be >= 0, got -1"):
        load_compare_config(good, ["max_cases=-1"])


def test_overrides_and_default_name(tmp_path: Path) -> None:
    path = _write_yaml(tmp_path / "my_cmp.yaml", "data: {root: .}\nmethods:\n  - {name: a, checkpoint: x.pt}\n")
    cfg = load_compare_config(path, ["max_cases=5", "data.root=/elsewhere"])
    assert cfg.name == "my_cmp" and cfg.max_cases == 5 and cfg.data.root == "/elsewhere"


@pytest.mark.parametrize("name", ["compare_covid_ct.yaml", "compare_cxr_lung.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_compare_config(REPO / "configs" / name)
    kinds = {("trained" if m.checkpoint else m.prompt) for m in cfg.methods}
    assert {"trained", "box_per_component", "iterative", "draft_boxes"} <= kinds


# ---------------------------------------------------------------------------- end to end
class BoxFiller(PromptedPredictor):
    """Stand-in for a SAM model: fills each box, or a 3-pixel square around positive points."""

    def __init__(self, checkpoint=None, device="cpu") -> None:
        super().__init__()

    def _embed(self, image: np.ndarray) -> None:
        pass

    def _predict(self, boxes, points, labels, mask_input, multimask):
        h, w = self._hw
        k = len(boxes) if boxes is not None else len(points)
        logits = np.full((k, h, w), -20.0, dtype=np.float32)
        for i in range(k):
            if boxes is not None:
                x0, y0, x1, y1 = np.round(boxes[i]).astype(int)
                logits[i, y0 : y1 + 1, x0 : x1 + 1] = 20.0
            else:
                for (x, y), lab in zip(points[i].astype(int), labels[i]):
                    logits[i, max(0, y - 3) : y + 4, max(0, x - 3) : x + 4] = 20.0 if lab == 1 else -20.0
        return logits, np.zeros((k, 1, 256, 256), np.float32)


@pytest.fixture
def box_filler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sam_predictors.PREDICTORS, "boxfiller", BoxFiller)


def _unet_checkpoint(path: Path, data: dict) -> Path:
    cfg = config_from_dict({"data": data, "model": {"arch": "unet"}, "seed": 0})
    atomic_save(model_payload(create_model_from_config(cfg), cfg, 0.5, {}), path)
    return path


METHODS = """methods:
  - {{name: unet, checkpoint: {ckpt}}}
  - {{name: missing, checkpoint: {tmp}/nope/best.pt}}
  - {{name: fill-box, predictor: boxfiller, prompt: box_per_component}}
  - {{name: fill-draft, predictor: boxfiller, prompt: draft_boxes, draft: {ckpt}}}
  - {{name: fill-fixed, predictor: boxfiller, prompt: points_fixed_mean, n_points: 1}}
  - {{name: fill-iter, predictor: boxfiller, prompt: iterative, rounds: 2}}
  - {{name: no-sam2, predictor: sam2.1_hiera_small, prompt: box_per_component}}
"""


def _read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _check_outputs(out: Path) -> dict[str, dict]:
    assert {p.name for p in out.iterdir()} >= {
        "comparison.md", "comparison.csv", "per_case.csv", "dice_boxplot.png",
        "iterative_curve.json", "iterative_curve.png"}
    rows = {r["method"]: r for r in _read_csv(out / "comparison.csv")}
    assert rows["missing"]["status"] == "skipped" and "not found" in rows["missing"]["reason"]
    assert rows["no-sam2"]["status"] == "skipped" and "sam2.1_hiera_small.pt" in rows["no-sam2"]["reason"]
    for name in ("unet", "fill-box", "fill-draft", "fill-fixed", "fill-iter"):
        assert rows[name]["status"] == "ok", rows[name]
    assert rows["fill-box"]["prompts_from_ground_truth"] == "yes"
    assert rows["fill-draft"]["prompts_from_ground_truth"] == "no"
    assert int(rows["unet"]["trainable_parameters"]) > 0 and rows["fill-box"]["trainable_parameters"] == "0"
    # Rectangles filled from their exact boxes: a perfect oracle, which also proves that the
    # prompts and the predictions are in the same orientation as the ground truth.
    assert float(rows["fill-box"]["dice"]) == pytest.approx(1.0)
    curves = json.loads((out / "iterative_curve.json").read_text())
    assert curves["fill-iter"]["clicks"] == [1, 2, 3]
    md = (out / "comparison.md").read_text()
    assert f"fill-box {ORACLE_MARK}" in md and "**missing** (skipped)" in md
    return rows


def test_compare_on_images_end_to_end(tmp_path: Path, box_filler: None) -> None:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        image = (rng.random((40, 56)) * 80).astype(np.uint8)
        mask = np.zeros((40, 56), dtype=np.uint8)
        mask[5 + i : 20 + i, 8:22] = 255  # two rectangles: non-square image, two components
        mask[10:30, 34 + i : 50] = 255
        image[mask > 0] += 120
        Image.fromarray(image).save(root / "images" / f"img{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")
    data = {"kind": "image", "root": str(root), "labels": ["masks"], "image_size": 64,
            "split": {"mode": "list", "val": ["img3", "img4"]}}
    ckpt = _unet_checkpoint(tmp_path / "unet.pt", data)
    config = _write_yaml(tmp_path / "cmp.yaml",
                         f"name: tiny\ndata: {json.dumps(data)}\n" + METHODS.format(ckpt=ckpt, tmp=tmp_path))
    out = run_compare(config, tmp_path / "out")
    rows = _check_outputs(out)
    assert rows["fill-box"]["n_cases"] == "2" and "dice_slice_mean" not in rows["fill-box"]
    per_case = _read_csv(out / "per_case.csv")
    assert {(r["method"], r["case"]) for r in per_case if r["method"] == "unet"} == {("unet", "img3"), ("unet", "img4")}


def test_compare_on_volumes_end_to_end(tmp_path: Path, box_filler: None) -> None:
    root = tmp_path / "ct"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    for i in range(3):
        vol = np.zeros((48, 32, 9), dtype=np.uint8)  # x, y, slice: non-square slices
        mask = np.zeros_like(vol)
        mask[6 + i : 20, 4:12, 2:7] = 1  # a lesion on slices 2..6 only
        vol[mask > 0] = 200
        nib.save(nib.Nifti1Image(vol, affine), root / "images" / f"case{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), root / "masks" / f"case{i}.nii.gz")
    data = {"kind": "volume", "root": str(root), "labels": ["masks"], "image_size": 32, "axis": 2,
            "split": {"mode": "list", "test": ["case2"], "val": ["case1"]}}
    ckpt = _unet_checkpoint(tmp_path / "unet.pt", data)
    config = _write_yaml(tmp_path / "cmp.yaml", f"name: tiny_ct\nmax_slices_per_case: 7\ndata: {json.dumps(data)}\n"
                         + METHODS.format(ckpt=ckpt, tmp=tmp_path))
    out = run_compare(config, tmp_path / "out")
    rows = _check_outputs(out)
    assert rows["fill-box"]["n_cases"] == "1" and rows["fill-box"]["n_slices"] == "7"
    # Slices without a lesion get no prompt: empty and correct (Dice 1 by the empty rule).
    assert float(rows["fill-box"]["dice_slice_mean"]) == pytest.approx(1.0)
    assert middle_block(9, 7) == [1, 2, 3, 4, 5, 6, 7]


# ------------------------------------------------------------------- trained methods = Predictor
def test_trained_methods_predict_exactly_as_the_inference_predictor(tmp_path: Path) -> None:
    from s2unet.baselines.compare_data import load_eval_case, slice_stacks
    from s2unet.baselines.compare_methods import TrainedModels
    from s2unet.data import find_cases
    from s2unet.models.checkpoint import load_model_checkpoint
    from s2unet.predict import Predictor

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray((rng.random((30, 44)) * 90).astype(np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray(((rng.random((30, 44)) > 0.7) * 255).astype(np.uint8)).save(root / "masks" / f"im{i}.png")
    # a model trained on percentile-normalised images: compare once fed it the raw image
    data = {"kind": "image", "root": str(root), "labels": ["masks"], "image_size": 32, "normalize": "percentile",
            "split": {"mode": "list", "val": ["im1"]}}
    ckpt = _unet_checkpoint(tmp_path / "unet.pt", data)
    cfg = config_from_dict({"data": data, "seed": 0})
    case = find_cases(cfg.data)[1]
    models = TrainedModels(cfg.data, [case], "cpu", slice_stacks([case]))
    pred, _ = models.predict(models.load(str(ckpt)), load_eval_case(case, cfg.data, 0))
    loaded = load_model_checkpoint(ckpt, "cpu")
    reference = Predictor(loaded.model, loaded.config, "cpu", loaded.threshold)
    prob, _ = reference.predict_case(case)
    np.testing.assert_array_equal(pred[:, 0], reference.binarize(prob))


def test_predict_planes_equals_the_whole_volume_prediction(tmp_path: Path) -> None:
    from s2unet.predict import Predictor

    data = {"kind": "volume", "root": ".", "labels": ["masks"], "image_size": 32, "axis": 2, "context_slices": True}
    cfg = config_from_dict({"data": data, "model": {"arch": "unet"}, "seed": 0})
    predictor = Predictor(create_model_from_config(cfg), cfg, "cpu", batch_size=2)
    volume = (np.random.default_rng(0).random((24, 20, 7)) * 255).astype(np.uint8)
    whole = predictor.predict_volume(volume)
    planes = [1, 2, 3, 6]  # an edge slice too: its 2.5D context comes from the whole volume
    np.testing.assert_allclose(predictor.predict_planes(volume, planes), np.moveaxis(whole[..., planes], 3, 1),
                               rtol=1e-5, atol=1e-6)


def test_the_overlap_warning_uses_the_cases_a_checkpoint_trained_on_by_content(tmp_path: Path) -> None:
    """A model trained on another folder whose cases share the test cases' names did not train on
    them; one whose recorded cases hold a test image's bytes (under any name) did; a checkpoint
    that records none cannot be checked."""
    from s2unet.baselines.compare_methods import TrainedModels
    from s2unet.data import case_identity, find_cases

    rng = np.random.default_rng(2)
    for folder in ("test", "other"):  # same names, other pictures
        (tmp_path / folder / "images").mkdir(parents=True)
        (tmp_path / folder / "masks").mkdir()
        for i in range(2):
            Image.fromarray((rng.random((32, 32)) * 90).astype(np.uint8)).save(tmp_path / folder / "images" / f"im{i}.png")
            Image.fromarray(((rng.random((32, 32)) > 0.7) * 255).astype(np.uint8)).save(tmp_path / folder / "masks" / f"im{i}.png")
    data = {"kind": "image", "root": str(tmp_path / "test"), "labels": ["masks"], "image_size": 32,
            "split": {"mode": "list", "train": ["im0", "im1"], "val": []}}
    cfg = config_from_dict({"data": data, "seed": 0})
    test_cases = find_cases(cfg.data)
    other_cases = find_cases(config_from_dict({"data": {**data, "root": str(tmp_path / "other")}}).data)

    def checkpoint(name: str, trained: list | None) -> str:
        path = _unet_checkpoint(tmp_path / name, data)
        payload = torch.load(path, weights_only=True)
        if trained is not None:
            payload["trained_cases"] = trained
        atomic_save(payload, path)
        return str(path)

    models = TrainedModels(cfg.data, test_cases, "cpu", False)
    models.load(checkpoint("other.pt", [case_identity(c) for c in other_cases]))
    assert models.notes == []  # its split names im0 and im1, but it trained on the other folder's
    renamed = {**case_identity(test_cases[1]), "case": "renamed"}
    models.load(checkpoint("leaked.pt", [case_identity(other_cases[0]), renamed]))
    assert models.notes == [f"WARNING: {tmp_path / 'leaked.pt'} was trained on 1 of the test cases (im1): "
                            "its scores are optimistic."]
    models.load(checkpoint("old.pt", None))
    assert models.notes[-1] == (f"WARNING: {tmp_path / 'old.pt'} does not record the cases it trained on (written by "
                                "an older s2unet): whether it trained on test cases cannot be checked.")
