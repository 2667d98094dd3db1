"""Validation: whole cases predicted by the inference Predictor at their native size and scored
by ``s2unet.metrics``, so the numbers equal what ``infer.py --gt`` reports for the same cases.

Sigmoid models are calibrated here first (a temperature fitted on a pixel sample,
:func:`s2unet.metrics.fit_calibration`), then the binarisation threshold is chosen on the
calibrated probabilities, on the mean per-case Dice, by :func:`s2unet.metrics.flat_threshold`
(the best Dice averaged over threshold +- 0.1, so it does not sit on a knife's edge)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from ..config import Config
from ..data import SliceDataset
from ..predict import Predictor, foreground_names, load_case_target
from ..metrics import (
    FLAT_WINDOW,
    case_metrics,
    dice_for_thresholds,
    fit_calibration,
    flat_threshold,
    sample_pixels,
    summarize,
    threshold_flatness,
)
from ..models import SegmentationModel, get_architecture
from ..models.calibration import Calibration
from ..text import PhraseBank

THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))


def validate(model: SegmentationModel, cfg: Config, dataset: SliceDataset, device: torch.device,
             max_cases: int = 0, batch_size: int = 8, threshold: Optional[float] = None,
             text: Optional[PhraseBank] = None, calibration: Optional[Calibration] = None) -> dict[str, Any]:
    """Predict every validation case, calibrate, tune the threshold, and score at that threshold.

    Args:
        model: the model (switched to eval for the call, restored after).
        cfg: the run config (data preprocessing, task, labels).
        dataset: the validation dataset (its ``cases`` are what is scored).
        device: where to run the model.
        max_cases: score only the first N cases (0 = all).
        batch_size: slices per forward pass.
        threshold: score at this threshold instead of tuning one (test cases must not choose
            their own threshold).
        text: a text-prompted model's phrase bank; every structure is asked with its first
            training phrase, so the channels and scores are those of a multi-label model.
        calibration: predict with this calibration (the one stored with ``threshold``). When
            neither is given, one is fitted on these cases; with only ``threshold`` given
            the identity is used. Multiclass models are never calibrated.

    A volume labelled on some slices only (``dataset.partial``) is predicted whole, post-processed
    whole, and scored on its labelled slices.

    Returns:
        ``{"threshold", "calibration", "summary": flat metric means, "cases": case ids}``;
        binary and multilabel summaries add ``dice_by_threshold`` (threshold -> mean case Dice
        of the calibrated probabilities, without post-processing), ``threshold_flatness`` (the
        Dice range over threshold +- 0.1, :func:`s2unet.metrics.threshold_flatness`) and
        ``temperature``; ``summary`` holds
        the per-case means under the metric names (``dice``...), the per-slice means as
        ``slice_dice``... for volumes, ``n_cases_empty_gt`` (cases whose reference is empty,
        for some label when there are several: they score Dice 1 when nothing is predicted,
        else 0, and are in ``dice``), with several labels ``n_cases_empty_gt/<label>`` per
        label, and the means leaving them out as ``with_gt_dice``... (per label, as
        :func:`s2unet.metrics.summarize` does).
    """
    was_training = model.training
    model.eval()
    multiclass = cfg.data.task == "multiclass"
    queries = None if text is None else text.structure_queries().embeddings
    predictor = Predictor(model, cfg, device, batch_size=batch_size, text=queries, calibration=calibration)
    cases = dataset.cases[: max_cases or None]
    probs, targets, spacings = [], [], []
    # A model fine-tuned with box prompts validates with boxes from the reference (oracle).
    boxed = get_architecture(cfg.model.arch).needs_reference(cfg.model)
    for case in cases:
        target = load_case_target(case, cfg)
        prob, spacing = predictor.predict_case(case, target if boxed else None)
        probs.append(prob)
        targets.append(target)
        spacings.append(spacing)
    model.train(was_training)

    def scored(case_id: str, array: np.ndarray) -> np.ndarray:
        ks = dataset.partial.get(case_id)
        return array if ks is None else np.take(array, ks, axis=1 + cfg.data.axis)

    curve = None
    if not multiclass:
        if calibration is None and threshold is None:  # tuning: calibrate on these cases first
            logits, pixels = sample_pixels([scored(c.case_id, p) for c, p in zip(cases, probs)],
                                           [scored(c.case_id, t) for c, t in zip(cases, targets)], seed=cfg.seed)
            calibration = fit_calibration(logits, pixels)
            probs = [calibration.calibrate_probabilities(p) for p in probs]
        # Mean over cases of each case's Dice (itself the mean over its labels) per threshold.
        curve = np.stack([dice_for_thresholds(scored(c.case_id, p), scored(c.case_id, t), THRESHOLDS,
                                              per_item=True).mean(0)
                          for c, p, t in zip(cases, probs, targets)]).mean(0)
        if threshold is None:
            threshold = flat_threshold(THRESHOLDS, curve)[0]
    calibration = Calibration() if calibration is None else calibration
    threshold = 0.5 if threshold is None else float(threshold)
    case_rows, slice_rows = [], []
    for case, prob, target, spacing in zip(cases, probs, targets, spacings):
        slice_axis = None if spacing is None else cfg.data.axis  # a 2D picture has neither (predict_case)
        # The config's post-processing too, so the score is what infer.py --gt reports.
        pred = predictor.clean(predictor.binarize(prob, threshold), slice_axis)
        row, rows = case_metrics(scored(case.case_id, pred), scored(case.case_id, target), case.case_id,
                                 labels=foreground_names(cfg), spacing=spacing, slice_axis=slice_axis)
        case_rows.append(row)
        slice_rows.extend(rows)
    stats = summarize(case_rows, slice_rows)
    summary = dict(stats["case_mean"])
    summary["n_cases_empty_gt"] = stats["n_cases"] - stats["n_cases_with_gt"]
    summary.update({f"n_cases_empty_gt/{k}": v for k, v in stats.get("n_cases_empty_by_label", {}).items()})
    summary.update({f"with_gt_{k}": v for k, v in stats["case_mean_with_gt"].items()})
    summary.update({f"slice_{k}": v for k, v in stats.get("slice_mean", {}).items()})
    summary["threshold"] = threshold
    if curve is not None:  # before post-processing: how much the score hangs on the threshold
        summary["dice_by_threshold"] = {f"{t:.2f}": round(float(d), 4) for t, d in zip(THRESHOLDS, curve)}
        summary["threshold_flatness"] = round(threshold_flatness(THRESHOLDS, curve, threshold, FLAT_WINDOW), 4)
        summary["temperature"] = calibration.temperature
    return {"threshold": threshold, "calibration": calibration, "summary": summary,
            "cases": [c.case_id for c in cases]}
