"""Metrics against hand-computed values on tiny arrays, the empty rules and the aggregation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s2unet.metrics import (
    case_metrics,
    confusion_counts,
    dice_for_thresholds,
    format_summary,
    image_diagonal,
    metric_row,
    overlap_scores,
    summarize,
    surface_scores,
)


def _square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top : top + size, left : left + size] = True
    return m


def test_overlap_metrics_exact() -> None:
    gt = np.zeros((4, 4), bool)
    gt[0, 0:4] = True  # 4 foreground pixels
    pred = np.zeros((4, 4), bool)
    pred[0, 0:2] = True  # 2 hits
    pred[3, 3] = True  # 1 false positive
    tp, fp, tn, fn = confusion_counts(pred, gt)
    assert (tp, fp, tn, fn) == (2, 1, 11, 2)
    s = overlap_scores(tp, fp, tn, fn)
    assert s["dice"] == pytest.approx(4 / 7)
    assert s["iou"] == pytest.approx(2 / 5)
    assert s["sensitivity"] == pytest.approx(2 / 4)
    assert s["specificity"] == pytest.approx(11 / 12)


def test_confusion_counts_per_axis_and_torch_input() -> None:
    gt = torch.zeros(2, 3, 3, dtype=torch.bool)
    gt[0, 0, 0] = True
    pred = gt.clone()
    pred[1, 1, 1] = True
    tp, fp, tn, fn = confusion_counts(pred, gt, axes=(1, 2))
    assert tp.tolist() == [1, 0] and fp.tolist() == [0, 1] and tn.tolist() == [8, 8] and fn.tolist() == [0, 0]


def test_surface_scores_leave_the_thread_count_as_it_was() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        surface_scores(_square((32, 32), 10, 10, 10), _square((32, 32), 13, 10, 10))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_hd95_of_shifted_square_and_nsd() -> None:
    # 10x10 square shifted by 3 rows; rows are 2 mm apart, columns 1 mm. The two boundaries'
    # far edges (28% of each boundary) are 3 rows = 6 mm from the other boundary, so HD95 = 6.
    gt = _square((32, 32), 10, 10, 10)
    pred = _square((32, 32), 13, 10, 10)
    s = surface_scores(pred, gt, spacing=(2.0, 1.0), nsd_tolerance=0.5)
    assert s["hd95"] == pytest.approx(6.0)
    # 14 of 36 boundary pixels of each square lie exactly on the other boundary (shared side
    # columns); every other pixel is >= 1 mm away.
    assert s["nsd"] == pytest.approx(28 / 72)
    assert surface_scores(pred, gt, spacing=(2.0, 1.0), nsd_tolerance=6.0)["nsd"] == pytest.approx(1.0)
    assert surface_scores(gt, gt, spacing=(2.0, 1.0)) == {"hd95": 0.0, "nsd": 1.0}


def test_surface_scores_match_monai_reference() -> None:
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(0)
    gt = np.zeros((20, 24, 6), bool)
    gt[5:14, 6:15, 1:5] = True
    pred = np.roll(gt, 2, axis=1) | (rng.random(gt.shape) > 0.98)
    spacing = (0.8, 0.6, 2.5)
    ours = surface_scores(pred, gt, spacing, nsd_tolerance=1.5)
    p, g = torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None]
    with pytest.warns(FutureWarning):  # monai's own deprecated-argument warning
        hd = compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing)
        nsd = compute_surface_dice(p, g, [1.5], include_background=True, spacing=spacing)
    assert ours["hd95"] == pytest.approx(hd.item(), rel=1e-5)
    assert ours["nsd"] == pytest.approx(nsd.item(), rel=1e-5)


def test_empty_rules() -> None:
    empty = np.zeros((1, 8, 16), bool)
    blob = empty.copy()
    blob[0, 2:4, 2:4] = True
    spacing = (2.0, 0.5)
    diag = math.hypot(8 * 2.0, 16 * 0.5)
    assert image_diagonal((8, 16), spacing) == pytest.approx(diag)

    both = metric_row(empty, empty, spacing=spacing, surface=True)
    assert {k: both[k] for k in ("dice", "iou", "sensitivity", "specificity", "hd95", "nsd")} == {
        "dice": 1.0, "iou": 1.0, "sensitivity": 1.0, "specificity": 1.0, "hd95": 0.0, "nsd": 1.0,
    }
    gt_empty = metric_row(blob, empty, spacing=spacing, surface=True)
    assert (gt_empty["dice"], gt_empty["iou"], gt_empty["sensitivity"]) == (0.0, 0.0, 1.0)
    assert gt_empty["specificity"] == pytest.approx(124 / 128)
    assert gt_empty["hd95"] == pytest.approx(diag) and gt_empty["nsd"] == 0.0
    pred_empty = metric_row(empty, blob, spacing=spacing, surface=True)
    assert (pred_empty["dice"], pred_empty["iou"], pred_empty["sensitivity"]) == (0.0, 0.0, 0.0)
    assert pred_empty["specificity"] == 1.0
    assert pred_empty["hd95"] == pytest.approx(diag) and pred_empty["nsd"] == 0.0
    assert not any(math.isnan(v) for r in (both, gt_empty, pred_empty) for v in r.values())


def test_multilabel_keys_and_mean() -> None:
    gt = np.zeros((2, 6, 6), bool)
    gt[0, :3] = True
    gt[1, 3:] = True
    pred = gt.copy()
    pred[1] = False
    row = metric_row(pred, gt, labels=["lungs", "heart"])
    assert row["dice/lungs"] == 1.0 and row["dice/heart"] == 0.0 and row["dice"] == 0.5
    assert row["gt_voxels"] == 36
    with pytest.raises(ValueError, match="label names"):
        metric_row(pred, gt, labels=["lungs"])


def test_slice_mean_differs_from_case_mean() -> None:
    # Case A: 2 slices along axis 2. Slice 0 perfect (4 px), slice 1: 12 GT px, 4 predicted.
    gt = np.zeros((1, 4, 4, 2), bool)
    pred = np.zeros_like(gt)
    gt[0, :1, :, 0] = True
    pred[0, :1, :, 0] = True
    gt[0, :3, :, 1] = True
    pred[0, :1, :, 1] = True
    row_a, slices_a = case_metrics(pred, gt, "a", slice_axis=2, spacing=(1.0, 1.0, 3.0))
    assert [r["slice"] for r in slices_a] == [0, 1]
    assert slices_a[0]["dice"] == 1.0
    assert slices_a[1]["dice"] == pytest.approx(8 / 16)
    assert row_a["dice"] == pytest.approx(2 * 8 / (8 + 16))  # pooled over the volume
    # Case B: one slice with no GT and no prediction (both-empty rule), one perfect slice.
    gt_b = np.zeros((1, 4, 4, 2), bool)
    gt_b[0, 1:2, :, 1] = True
    row_b, slices_b = case_metrics(gt_b.copy(), gt_b, "b", slice_axis=2)
    assert row_b["dice"] == 1.0

    summary = summarize([row_a, row_b], slices_a + slices_b)
    assert summary["n_cases"] == 2 and summary["n_slices"] == 4
    assert summary["case_mean"]["dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert summary["case_std"]["dice"] == pytest.approx(np.std([2 / 3, 1.0]))
    assert summary["slice_mean"]["dice"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert summary["n_slices_with_gt"] == 3
    assert summary["slice_mean_with_gt"]["dice"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_slice_surface_uses_in_plane_spacing() -> None:
    gt = _square((32, 32), 10, 10, 10)[None, :, None, :].repeat(3, axis=2)  # slices on axis 1
    pred = _square((32, 32), 13, 10, 10)[None, :, None, :].repeat(3, axis=2)
    _, rows = case_metrics(pred, gt, "c", spacing=(2.0, 9.0, 1.0), slice_axis=1, surface=True)
    assert len(rows) == 3 and all(r["hd95"] == pytest.approx(6.0) for r in rows)


def test_summarize_images_without_slices() -> None:
    rows = [{"case": "x", "dice": 0.5, "gt_voxels": 3}, {"case": "y", "dice": 1.0, "gt_voxels": 0}]
    s = summarize(rows, [])
    assert s["case_mean"] == {"dice": 0.75} and "slice_mean" not in s


def test_dice_for_thresholds_hand_values() -> None:
    prob = np.array([0.9, 0.6, 0.4, 0.1])
    gt = np.array([True, True, False, False])
    # t=0.5 -> {0.9, 0.6}: perfect; t=0.3 -> 3 predicted, 2 hit: 4/5; t=0.95 -> none: 0
    d = dice_for_thresholds(prob, gt, [0.5, 0.3, 0.95])
    np.testing.assert_allclose(d, [1.0, 0.8, 0.0])
    # the threshold itself counts as foreground (prob >= t)
    assert dice_for_thresholds(prob, gt, [0.6])[0] == 1.0


def test_dice_for_thresholds_per_item_matches_confusion_counts() -> None:
    rng = np.random.default_rng(1)
    prob = torch.from_numpy(rng.random((3, 16, 16)).astype(np.float32))
    gt = rng.random((3, 16, 16)) > 0.6
    gt[2] = False  # an empty item
    thresholds = np.linspace(0.05, 0.95, 19)
    d = dice_for_thresholds(prob, gt, thresholds, per_item=True)
    assert d.shape == (3, 19)
    for i in range(3):
        for j, t in enumerate(thresholds):
            expected = overlap_scores(*confusion_counts(prob[i].numpy() >= t, gt[i]))["dice"]
            assert d[i, j] == pytest.approx(float(expected))


def test_empty_reference_cases_are_counted_and_left_out_of_the_with_gt_mean() -> None:
    rows = [{"case": "x", "dice": 0.5, "gt_voxels": 3}, {"case": "y", "dice": 1.0, "gt_voxels": 0}]
    s = summarize(rows, [])
    assert s["n_cases_with_gt"] == 1 and s["case_mean_with_gt"] == {"dice": 0.5}
    text = format_summary(s)
    assert "1 of 2 cases have an empty reference" in text and "cases with GT 0.5000" in text
    full = summarize(rows[:1], [])
    assert "empty reference" not in format_summary(full)


def test_an_empty_reference_of_one_label_is_left_out_of_that_labels_with_gt_mean() -> None:
    def case(lungs_pred: int, heart_gt: int, heart_pred: int) -> tuple[np.ndarray, np.ndarray]:
        gt, pred = np.zeros((2, 6, 6), bool), np.zeros((2, 6, 6), bool)
        gt[0, :3], pred[0, :lungs_pred] = True, True
        gt[1, 5, :heart_gt], pred[1, 5, :heart_pred] = True, True
        return pred, gt

    # a: lungs perfect, heart 2 of 4 px; b: lungs 6 of 18 px, no heart anywhere; c: both perfect
    pairs = {"a": case(3, 4, 2), "b": case(1, 0, 0), "c": case(3, 4, 4)}
    rows = [case_metrics(p, g, name, labels=["lungs", "heart"])[0] for name, (p, g) in pairs.items()]
    assert rows[1]["gt_voxels/heart"] == 0 and rows[1]["gt_voxels/lungs"] == 18 and rows[1]["gt_voxels"] == 18
    assert rows[1]["dice/heart"] == 1.0  # nothing predicted where nothing is: the empty rule
    lungs = (1.0 + 2 * 6 / (6 + 18) + 1.0) / 3
    heart = (2 * 2 / (2 + 4) + 1.0) / 2  # case b left out for the heart only
    s = summarize(rows, [])
    assert s["n_cases_with_gt"] == 2 and s["n_cases_empty_by_label"] == {"lungs": 0, "heart": 1}
    assert s["case_mean_with_gt"]["dice/lungs"] == pytest.approx(lungs)
    assert s["case_mean_with_gt"]["dice/heart"] == pytest.approx(heart)
    assert s["case_mean_with_gt"]["dice"] == pytest.approx((lungs + heart) / 2)
    text = format_summary(s)
    assert ("empty references: heart in 1 of 3 cases (Dice 1 if nothing is predicted there, else 0); "
            "'cases with GT' leaves them out per label") in text
    heart_line = next(line for line in text.splitlines() if line.startswith("dice/heart "))
    assert f"cases with GT {heart:.4f}" in heart_line

    # Slices: the heart is on slice 1 only, so its slice 0 is left out of the heart's slice mean.
    gt = np.zeros((2, 4, 4, 2), bool)
    gt[0] = True
    gt[1, 0, :, 1] = True
    pred = gt.copy()
    pred[1, 0, :, 0] = True  # heart predicted where its reference is empty: Dice 0 there
    _, slices = case_metrics(pred, gt, "v", labels=["lungs", "heart"], slice_axis=2)
    assert [r["gt_voxels/heart"] for r in slices] == [0, 4]
    s = summarize([], slices)
    assert s["slice_mean"]["dice/heart"] == 0.5 and s["slice_mean_with_gt"]["dice/heart"] == 1.0
    assert s["n_slices_with_gt"] == 1 and s["n_slices_empty_by_label"] == {"lungs": 0, "heart": 1}


def test_a_one_slice_volume_is_scored_as_the_2d_slice_it_is() -> None:
    pred, gt = np.zeros((20, 24), bool), np.zeros((20, 24), bool)
    pred[4:12, 5:15], gt[6:14, 5:17] = True, True
    picture = metric_row(pred[None], gt[None], surface=True)  # a PNG: (H, W) in pixels
    # The same slice as a one-slice NIfTI volume: (x, y, 1) with unit spacing, cut along z.
    volume, slices = case_metrics(pred.T[None, ..., None], gt.T[None, ..., None], "c", spacing=(1.0, 1.0, 1.0),
                                  slice_axis=2, surface=True)
    for key in ("dice", "hd95", "nsd"):
        assert volume[key] == pytest.approx(picture[key]) and slices[0][key] == pytest.approx(picture[key])
    empty = metric_row(np.zeros((1, 20, 24, 1), bool), gt[None, ..., None], spacing=(0.5, 0.5, 3.0), surface=True)
    assert empty["hd95"] == pytest.approx(math.hypot(10.0, 12.0))  # the slice's diagonal, not through 3 mm
