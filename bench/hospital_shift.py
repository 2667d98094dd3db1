#!/usr/bin/env python
"""Hospital-shift suite: Dice of CT checkpoints on the other source's cases as another hospital
would send them (issue #22).

Each checkpoint (typically a run trained on one source with ``data.split.mode: group``, e.g.
``scripts/cross_source.sh``) predicts its run's ``test`` cases (the other source) as stored and
under each column of :func:`build_columns`, and its in-source ``val`` cases as stored (the
reference). A column changes the served slices (and, for a crop, the reference with them) before
the inference Predictor sees them, at the checkpoint's threshold and post-processing:

- field of view: the square around the body (Otsu threshold, largest component) or tightly
  around the lungs (``--lung-masks``), over all slices of the case, resized to N x N px (the
  model's own resize to ``data.image_size`` then follows, as for any input frame);
- intensity: monotone maps of the 0..1 stored value (the shared CT is 8-bit CLAHE, not HU, so
  windows are simulated), re-quantised to the stored type as in ``bench/intensity_shift.py``;
- blur and noise;
- larger lesions: only the slices whose lesion share of the frame is in the top third of the
  lesion-bearing test slices (pooled over the cases scored).

Per column: case-mean Dice at the stored threshold, the column's best threshold (of the grid
validation tunes on, scored post-processed) and the Dice there, ``cost`` = in-source Dice - column Dice and ``gap`` =
best Dice - Dice at the stored threshold; the goal of issue #22 is cost <= 0.05 and gap <= 0.02.

    python bench/hospital_shift.py --checkpoint runs/xs_baseline_coronacases-latest/best.pt \\
        --checkpoint runs/xs_baseline_radiopaedia-latest/best.pt --threads 1

Writes ``<out>.json`` (per checkpoint and column: Dice, per-case Dice, thresholds, the Dice by
threshold, goal) and ``<out>.md``, atomically, after every input was checked.
"""
from __future__ import annotations

import argparse
import sys
import time
import zlib
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/hospital_shift.py`` from a checkout
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from bench.intensity_shift import (  # noqa: E402
    SHIFT_DESCRIPTIONS,
    SHIFTS,
    Shift,
    ShiftCase,
    case_dice,
    chosen,
    prepare_cases,
    prepared_runs,
    requantise,
    run_facts,
)
from bench.speed_report import command_line, markdown_table, write_result  # noqa: E402
from s2unet.data import DataError, resize_to, resolve_dir  # noqa: E402
from s2unet.data.fingerprint import Fingerprint, measure_slice, pool  # noqa: E402
from s2unet.engine.validation import THRESHOLDS  # noqa: E402
from s2unet.models.checkpoint import LoadedModel  # noqa: E402
from s2unet.predict import Predictor, foreground_names, load_masks  # noqa: E402
from s2unet.predict.harmonise import FOV_MODES, INTENSITY_MODES, for_case  # noqa: E402

GOAL_COST = 0.05  # issue #22: no column costs more Dice than this against in-source validation
GOAL_GAP = 0.02  # ... and the stored threshold stays this close to the column's best
SIZES = (270, 360, 460)
TABLE_OPENING = 4  # px radius of the in-plane opening that parts body and table (the table is thinner)
LUNG_MARGIN = 0.04  # of the box side, each way: "tightly" around the lungs, not on their edge
WIDE_MARGIN = 0.2  # a scanner field of view 1.4 x the body (the shared frames end at the body)
# Lung window on the 8-bit CLAHE values: the air level of the shared volumes (about 20/255) goes
# black, and everything from 115/255 up, the median soft tissue outside the lungs (110-136/255
# in cases 00, 10), goes white, as a W 1000 / L -600 HU window does to fat and soft tissue.
LUNG_WINDOW = (0.08, 0.45)
#: The predictor for one served volume (the place for the harmonisations of ``s2unet.predict``).
Harmonise = Callable[[Predictor, np.ndarray], Predictor]


@dataclass
class Frame:
    """One case as a column gives it to the model, slice planes first.

    Attributes:
        case_id: the case.
        planes: (n, H, W) stored values (the served volume's planes along ``data.axis``).
        target: (C, n, H, W) bool reference.
        lungs: (n, H, W) bool lung mask, None when not read (no lung column asked for).
        levels: full scale of the stored values (255 / 65535).
        slices: the planes scored (None = all).
    """

    case_id: str
    planes: np.ndarray
    target: np.ndarray
    lungs: Optional[np.ndarray]
    levels: int
    slices: Optional[np.ndarray] = None


Column = Callable[[Frame], Frame]


def intensity(shift: Shift, frame: Frame) -> Frame:
    """The frame with a 0..1 intensity map applied and re-quantised to its stored type."""
    return replace(frame, planes=requantise(frame.planes, shift, frame.levels))


def noisy(std: float, frame: Frame) -> Frame:
    """Gaussian noise of ``std`` (0..1 units), seeded by the case id (the same on every run)."""
    rng = np.random.default_rng(zlib.crc32(frame.case_id.encode()))
    return intensity(lambda x: x + rng.normal(0.0, std, x.shape).astype(np.float32), frame)


def body_mask(planes: np.ndarray) -> np.ndarray:
    """The body: voxels above the volume's Otsu threshold (SimpleITK), holes filled in-plane (the
    lungs fall below the threshold), opened in-plane (so the thin patient table comes apart from the
    body), its largest 3D component."""
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    above = sitk.GetArrayFromImage(otsu.Execute(sitk.GetImageFromArray(planes))).astype(bool)
    disc = np.hypot(*np.mgrid[-TABLE_OPENING:TABLE_OPENING + 1, -TABLE_OPENING:TABLE_OPENING + 1]) <= TABLE_OPENING
    above = np.stack([ndimage.binary_fill_holes(plane) for plane in above])
    above = ndimage.binary_opening(above, disc[None])
    labels, n = ndimage.label(above)
    if n == 0:
        return above
    return labels == 1 + int(np.argmax(ndimage.sum_labels(above, labels, range(1, n + 1))))


def square_box(region: np.ndarray, margin: float) -> tuple[int, int, int]:
    """(top, left, side) of the square around a region's in-plane extent over all its planes,
    widened by ``margin`` x side on every side; it may reach outside the frame."""
    rows, cols = np.nonzero(region.any(axis=0))
    if not len(rows):  # nothing found: the whole frame
        return 0, 0, max(region.shape[1:])
    h, w = rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min()
    side = int(np.ceil(max(h, w) * (1 + 2 * margin)))
    top = int(rows.min() + h // 2 - side // 2)
    left = int(cols.min() + w // 2 - side // 2)
    return top, left, side


def _cut(array: np.ndarray, box: tuple[int, int, int], fill: Any) -> np.ndarray:
    """The (..., side, side) square of a (..., H, W) array, ``fill`` where it leaves the frame."""
    top, left, side = box
    h, w = array.shape[-2:]
    pad = [(0, 0)] * (array.ndim - 2) + [(max(0, -top), max(0, top + side - h)), (max(0, -left), max(0, left + side - w))]
    padded = np.pad(array, pad, constant_values=fill)
    top, left = top + pad[-2][0], left + pad[-1][0]
    return padded[..., top : top + side, left : left + side]


def _resized(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(..., side, side) resized to (..., size, size) with the dataset's own resize."""
    flat = array.reshape(-1, *array.shape[-2:])
    return resize_to(flat.astype(np.float32) if mode == "bilinear" else flat, size, mode).numpy().reshape(
        *array.shape[:-2], size, size)


def reframed(region: str, margin: float, size: int, frame: Frame) -> Frame:
    """The frame cropped to the square around the body or the lungs, widened by ``margin`` x its
    side each way, and resized to size x size px.

    Outside the stored frame the crop is filled with the volume's lowest value (air); the
    reference and lungs are cut and resized (nearest) with the image.
    """
    if region == "lungs" and frame.lungs is None:
        raise DataError(f"{frame.case_id}: a lung crop needs the lung masks (--lung-masks)")
    box = square_box(frame.lungs if region == "lungs" else body_mask(frame.planes), margin)
    image = _resized(_cut(frame.planes, box, frame.planes.min()), size, "bilinear")
    planes = np.clip(np.rint(image), 0, frame.levels).astype(frame.planes.dtype)
    target = _resized(_cut(frame.target, box, False), size, "nearest")
    lungs = None if frame.lungs is None else _resized(_cut(frame.lungs, box, False), size, "nearest")
    return replace(frame, planes=planes, target=target, lungs=lungs)


def lesion_share(target: np.ndarray) -> np.ndarray:
    """(n,) share of each plane's frame that is lesion (any label)."""
    return target.any(axis=0).mean(axis=(1, 2))


def larger_lesion_cut(frames: Sequence[Frame]) -> float:
    """The lesion share from which a plane is in the top third of the lesion-bearing planes."""
    shares = np.concatenate([lesion_share(f.target) for f in frames])
    shares = shares[shares > 0]
    return float(np.quantile(shares, 2 / 3)) if len(shares) else float("inf")


def larger_lesions(cut: float, frame: Frame) -> Frame:
    """Only the planes whose lesion share is at least ``cut``."""
    return replace(frame, slices=np.flatnonzero(lesion_share(frame.target) >= cut))


def lung_window(x: np.ndarray) -> np.ndarray:
    lo, hi = LUNG_WINDOW
    return np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)


def blurred(sigma: float) -> Shift:
    return lambda x: ndimage.gaussian_filter(x, (0, sigma, sigma))


INTENSITY = ("gamma 0.6", "gamma 1.6", "low contrast", "high contrast", "brightness +0.15")
COLUMN_DESCRIPTIONS: dict[str, str] = {
    "as stored": "the other source's cases as stored",
    **{f"body {n}": f"square around the body (Otsu, holes filled, opened by a {TABLE_OPENING} px disc, "
                    f"largest component, all slices), resized to {n} x {n} px" for n in SIZES},
    "wide field 360": f"square around the body as for 'body', {WIDE_MARGIN:.0%} of its side added each way (air "
                      "beyond the stored frame), resized to 360 x 360 px: the body smaller in the frame",
    **{f"lungs {n}": f"square around the lung masks (all slices) + {LUNG_MARGIN:.0%} margin each side, "
                     f"resized to {n} x {n} px" for n in SIZES},
    "lung window": f"clip((x - {LUNG_WINDOW[0]}) / {LUNG_WINDOW[1] - LUNG_WINDOW[0]:.2f}, 0, 1): air black, "
                   f"values >= {LUNG_WINDOW[1]} (soft tissue) white",
    **{name: SHIFT_DESCRIPTIONS[name] for name in INTENSITY},
    "blur 1": "Gaussian blur, sigma 1 px in-plane", "blur 2": "Gaussian blur, sigma 2 px in-plane",
    "noise 0.03": "x + N(0, 0.03), seeded by case", "noise 0.06": "x + N(0, 0.06), seeded by case",
    "larger lesions": "as stored, only the slices whose lesion share of the frame is in the top third of the "
                      "lesion-bearing slices of the cases scored",
}
LUNG_COLUMNS = tuple(f"lungs {n}" for n in SIZES)


def build_columns(lesion_cut: float) -> dict[str, Column]:
    """Every column's frame map; ``lesion_cut`` from :func:`larger_lesion_cut` of the test frames.

    x is the stored value on 0..1 (value / 255 for 8-bit); every intensity column is re-quantised
    to the stored type (see :data:`COLUMN_DESCRIPTIONS`).
    """
    columns: dict[str, Column] = {"as stored": lambda f: f}
    columns.update({f"body {n}": partial(reframed, "body", 0.0, n) for n in SIZES})
    columns["wide field 360"] = partial(reframed, "body", WIDE_MARGIN, 360)
    columns.update({f"lungs {n}": partial(reframed, "lungs", LUNG_MARGIN, n) for n in SIZES})
    columns["lung window"] = partial(intensity, lung_window)
    columns.update({name: partial(intensity, SHIFTS[name]) for name in INTENSITY})
    columns.update({f"blur {s}": partial(intensity, blurred(s)) for s in (1, 2)})
    columns.update({f"noise {s}": partial(noisy, s) for s in (0.03, 0.06)})
    columns["larger lesions"] = partial(larger_lesions, lesion_cut)
    return columns


def frames_of(cases: Sequence[ShiftCase], loaded: LoadedModel, lung_folder: str) -> list[Frame]:
    """The cases as planes-first frames; their lung masks when ``lung_folder`` is given.

    Raises:
        DataError: a case without a lung mask file in ``lung_folder`` (named).
    """
    data = loaded.config.data
    out = []
    for item in cases:
        lungs = None
        if lung_folder:
            path = resolve_dir(data, lung_folder) / item.case.image.name
            if not path.is_file():
                raise DataError(f"{path}: no lung mask for case {item.case.case_id} (--lung-masks {lung_folder})")
            lungs = np.moveaxis(load_masks([path], data)[0], data.axis, 0)
        out.append(Frame(item.case.case_id, np.moveaxis(item.image.get_array(), data.axis, 0),
                         np.moveaxis(item.target, data.axis + 1, 1), lungs, item.levels))
    return out


def score_frames(predictor: Predictor, frames: Sequence[Frame], harmonise: Optional[Harmonise] = None
                 ) -> dict[str, Any]:
    """Dice of the frames at the stored threshold and at the threshold best for them.

    One case is predicted at a time and scored at every threshold of the validation grid (and the
    stored one), binarised and post-processed as validation scores, so no probabilities of
    the other cases are kept (a 460 px column of 1200 slices would need 1 GB of them).

    Args:
        predictor: the checkpoint's Predictor (its threshold is the stored one).
        frames: the cases as the column gives them; a frame with no scored plane is skipped.
        harmonise: the predictor for each served volume (:func:`fingerprint_harmonise`; None =
            the volumes as given).

    Returns:
        ``dice`` (case mean at the stored threshold), ``per_case``, ``best_threshold`` (the
        grid's threshold of the highest case mean; the stored one when none beats it) and
        ``best_dice`` there, ``dice_by_threshold`` (case means), ``slices`` scored and the frame ``size``.
    """
    axis = predictor.cfg.data.axis
    names = foreground_names(predictor.cfg)
    stored = predictor.threshold
    grid = sorted({*map(float, THRESHOLDS), stored})
    scored = [f for f in frames if f.slices is None or len(f.slices)]
    rows = []  # per case: Dice at every threshold of the grid
    for f in scored:
        volume = np.moveaxis(f.planes, 0, axis)
        prob = (predictor if harmonise is None else harmonise(predictor, volume)).predict_volume(volume)
        target = np.moveaxis(f.target, 1, axis + 1)
        rows.append([case_dice(predictor, prob, target, names, axis, t, f.slices) for t in grid])
    curve = np.mean(rows, axis=0)
    at_stored = grid.index(stored)
    best = at_stored if curve[at_stored] >= curve.max() else int(curve.argmax())
    return {
        "dice": float(curve[at_stored]), "per_case": {f.case_id: row[at_stored] for f, row in zip(scored, rows)},
        "best_threshold": grid[best], "best_dice": float(curve[best]),
        "dice_by_threshold": {f"{t:.2f}": round(float(d), 4) for t, d in zip(grid, curve)},
        "slices": int(sum(f.planes.shape[0] if f.slices is None else len(f.slices) for f in scored)),
        "size": list(scored[0].planes.shape[1:]),
    }


def goal(reference: float, entry: dict[str, Any]) -> dict[str, Any]:
    """Issue #22's goal for one column: cost and threshold gap, and whether both are met."""
    cost, gap = reference - entry["dice"], entry["best_dice"] - entry["dice"]
    return {"cost": round(cost, 4), "gap": round(gap, 4), "meets_goal": bool(cost <= GOAL_COST and gap <= GOAL_GAP)}


def prepare(loaded: LoadedModel, max_cases: int, lung_folder: str, names: Sequence[str]
            ) -> tuple[list[Frame], list[Frame]]:
    """The in-source validation and other-source test frames of a checkpoint, checked.

    Raises:
        DataError: a 2D-image model, no val or test cases, data that cannot be shifted, a
            missing lung mask, or test cases without lesions for the larger-lesion column.
    """
    if loaded.config.data.kind != "volume":
        raise DataError(f"{loaded.path}: the hospital-shift suite scores CT volume models; this one has "
                        f"data.kind {loaded.config.data.kind!r}")
    val, test = (frames_of(prepare_cases(loaded, split, max_cases), loaded, lung_folder) for split in ("val", "test"))
    if "larger lesions" in names and not any(f.target.any() for f in test):
        raise DataError(f"{loaded.path.parent / 'split.json'}: its test cases have no lesion; "
                        "leave out the 'larger lesions' column")
    return val, test


def fingerprint_harmonise(loaded: LoadedModel, intensity: str, fov: str) -> Optional[Harmonise]:
    """``infer.py --harmonise-intensity/--harmonise-fov`` for the suite: each volume measured as
    infer measures a case and harmonised towards the checkpoint's fingerprint (None: no flag)."""
    if intensity == "none" and fov == "none":
        return None
    if loaded.fingerprint is None:
        raise DataError(f"{loaded.path}: no training fingerprint to harmonise towards (trained before fingerprints)")
    training = Fingerprint.from_payload(loaded.fingerprint)

    def harmonised(predictor: Predictor, volume: np.ndarray) -> Predictor:
        case = pool([measure_slice(x) for x in predictor.volume_inputs(volume)])
        return predictor.harmonised(for_case(case, training, intensity, fov))
    return harmonised


def score_checkpoint(loaded: LoadedModel, val: Sequence[Frame], test: Sequence[Frame], names: Sequence[str],
                     harmonise: Optional[Harmonise] = None) -> dict[str, Any]:
    """The reference (in-source validation) and every named column of one checkpoint."""
    cfg = loaded.config
    predictor = Predictor(loaded.model, cfg, threshold=loaded.threshold, text=loaded.structure_text,
                          calibration=loaded.calibration)
    reference = score_frames(predictor, val, harmonise)
    print(f"  in-source validation: Dice {reference['dice']:.4f}", flush=True)
    cut = larger_lesion_cut(test)
    columns = build_columns(cut)
    out: dict[str, Any] = {}
    for name in names:
        entry = score_frames(predictor, [columns[name](f) for f in test], harmonise)
        entry.update(goal(reference["dice"], entry))
        out[name] = entry
        print(f"  {name}: Dice {entry['dice']:.4f} (best {entry['best_dice']:.4f} at {entry['best_threshold']:.2f}), "
              f"cost {entry['cost']:+.3f}, gap {entry['gap']:+.3f}", flush=True)
    split = cfg.data.split
    return {
        "checkpoint": str(loaded.path), "name": loaded.path.resolve().parent.name, "threshold": loaded.threshold,
        "train_groups": list(split.train_groups) if split.mode == "group" else None,
        "val_cases": [f.case_id for f in val], "test_cases": [f.case_id for f in test],
        "larger_lesion_share": cut, "in_source": reference, "columns": out,
    }


def markdown(result: dict[str, Any]) -> str:
    """Per checkpoint one table: a row per column; then what each column does."""
    parts = [f"`{result['command']}` ({result['seconds']:.0f} s, load average at the end "
             f"{result['load_average_at_end']}). Goal: cost <= {GOAL_COST} and gap <= {GOAL_GAP}.\n"]
    for ck in result["checkpoints"]:
        ref, t = ck["in_source"], ck["threshold"]
        rows = [["in-source validation", len(ck["val_cases"]), f"{ref['dice']:.3f}", "", f"{ref['best_threshold']:.2f}",
                 f"{ref['best_dice']:.3f}", "", ""]]
        for name, e in ck["columns"].items():
            rows.append([name, f"{len(e['per_case'])} ({e['slices']} slices)", f"{e['dice']:.3f}", f"{e['cost']:+.3f}",
                         f"{e['best_threshold']:.2f}", f"{e['best_dice']:.3f}", f"{e['gap']:+.3f}",
                         "meets" if e["meets_goal"] else "misses"])
        groups = ", ".join(ck["train_groups"] or []) or "(not a group split)"
        parts.append(f"### {ck['name']} (trained on {groups}; stored threshold {t:.2f})\n\n" + markdown_table(
            ["column", "cases", f"Dice at {t:.2f}", "cost", "best threshold", "best Dice", "gap", "goal"], rows) + "\n")
    parts.append(markdown_table(["column", "what it does"], [[n, d] for n, d in result["columns"].items()]) + "\n")
    return "\n".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the suite; returns the exit code (2 with one error line for refused input)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True, help="a run's best.pt (repeatable)")
    parser.add_argument("--columns", default=",".join(COLUMN_DESCRIPTIONS),
                        help="comma-separated subset of: " + ", ".join(COLUMN_DESCRIPTIONS))
    parser.add_argument("--max-cases", type=int, default=0, help="the first N val and test cases (0 = all)")
    parser.add_argument("--lung-masks", default="masks_lung",
                        help="lung mask folder (relative to data.root) for the lung crops; '' = none")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--harmonise-intensity", choices=INTENSITY_MODES, default="none",
                        help="as infer.py's flag: every column (and the reference) harmonised so")
    parser.add_argument("--harmonise-fov", choices=FOV_MODES, default="none", help="as infer.py's flag")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "hospital_shift"),
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)
    names = chosen(parser, "--columns", args.columns, list(COLUMN_DESCRIPTIONS))
    if args.max_cases < 0 or args.threads < 1:
        parser.error("--max-cases must be >= 0 and --threads >= 1")
    lungs = args.lung_masks if any(n in LUNG_COLUMNS for n in names) else ""
    if any(n in LUNG_COLUMNS for n in names) and not lungs:
        parser.error("--lung-masks '' leaves the lung columns (" + ", ".join(LUNG_COLUMNS) + ") without masks")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    runs = prepared_runs(args.checkpoint, lambda loaded: prepare(loaded, args.max_cases, lungs, names))
    if runs is None:
        return 2
    checkpoints = []
    for loaded, (val, test) in runs:
        print(f"{loaded.path}: {len(val)} val and {len(test)} test cases", flush=True)
        harmonise = fingerprint_harmonise(loaded, args.harmonise_intensity, args.harmonise_fov)
        checkpoints.append(score_checkpoint(loaded, val, test, names, harmonise))
    command = command_line("hospital_shift.py", argv)
    result = {"command": command, "max_cases": args.max_cases, "threads": args.threads,
              "harmonise": {"intensity": args.harmonise_intensity, "fov": args.harmonise_fov},
              "goal": {"cost": GOAL_COST, "gap": GOAL_GAP}, "thresholds": list(map(float, THRESHOLDS)),
              "columns": {n: COLUMN_DESCRIPTIONS[n] for n in names}, "checkpoints": checkpoints, **run_facts(start)}
    write_result(Path(args.out), result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
