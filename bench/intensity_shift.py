#!/usr/bin/env python
"""Dice of trained checkpoints when the same test images come from a scanner with another
intensity mapping.

Hospitals differ mostly in window, contrast, gamma and CLAHE; ``data.normalize`` is meant to make
a model robust to that. Each checkpoint predicts every case of its run's ``--split`` (the run's
``split.json``) as stored and under each shift of :data:`SHIFTS`: a map of the 0..1 intensity
applied to the stored image, re-quantised to the stored type (8- or 16-bit), so the model sees
what a file from that other source would give it. Prediction is the inference Predictor at the
checkpoint's threshold with its post-processing, so the ``identity`` column is the run's own
score (``summary.json``'s ``test_dice`` for the whole test split).

    python bench/intensity_shift.py --checkpoint runs/cxr_lung-latest/best.pt --max-cases 12 --threads 1

Only 8/16-bit data read as 0..1 is shifted (2D pictures; volumes like the shared CT, which are
8-bit CLAHE, not Hounsfield units). HU or float volumes are refused: a window shift would be the
test there. Writes ``<out>.json`` (per checkpoint and shift: mean Dice, per-case Dice, empty
references) and ``<out>.md``, atomically.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/intensity_shift.py`` from a checkout
    sys.path.insert(0, str(REPO))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.speed_report import command_line, load_average, machine_info, markdown_table, write_result  # noqa: E402
from s2unet.config import ConfigError, DataConfig  # noqa: E402
from s2unet.data import Case, CaseImage, DataError, read_case, read_raw, window_bounds  # noqa: E402
from s2unet.data.intensity import clahe  # noqa: E402
from s2unet.engine.records import environment_versions, run_split_cases  # noqa: E402
from s2unet.metrics import metric_row  # noqa: E402
from s2unet.models import get_architecture  # noqa: E402
from s2unet.models.checkpoint import LoadedModel, load_model_checkpoint  # noqa: E402
from s2unet.predict import Predictor, foreground_names, load_case_target  # noqa: E402
from s2unet.weights import CheckpointError  # noqa: E402

Shift = Callable[[np.ndarray], np.ndarray]
# Stored integer types and their full scale (what the readers divide by to get 0..1).
LEVELS = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
CLAHE_CHUNK = 32  # planes per kornia call, to bound the memory of a long volume


def _clahe_planes(unit: np.ndarray) -> np.ndarray:
    """CLAHE of each plane (the CLAHE another site's export may apply), in chunks of planes."""
    parts = [clahe(torch.from_numpy(np.ascontiguousarray(unit[i : i + CLAHE_CHUNK]))).numpy()
             for i in range(0, len(unit), CLAHE_CHUNK)]
    return np.concatenate(parts)


# Each maps (planes, H, W) float32 in 0..1 to the same; all but CLAHE are monotone.
SHIFTS: dict[str, Shift] = {
    "identity": lambda x: x,
    "gamma 0.6": lambda x: np.power(x, np.float32(0.6)),
    "gamma 1.6": lambda x: np.power(x, np.float32(1.6)),
    "low contrast": lambda x: np.float32(0.25) + np.float32(0.5) * x,
    "high contrast": lambda x: np.clip((x - np.float32(0.5)) * np.float32(1.5) + np.float32(0.5), 0.0, 1.0),
    "brightness +0.15": lambda x: np.clip(x + np.float32(0.15), 0.0, 1.0),
    "clahe": _clahe_planes,
}
SHIFT_DESCRIPTIONS = {
    "identity": "x (the stored image, through the same re-quantisation)",
    "gamma 0.6": "x ** 0.6", "gamma 1.6": "x ** 1.6", "low contrast": "0.25 + 0.5 x",
    "high contrast": "clip((x - 0.5) * 1.5 + 0.5, 0, 1)", "brightness +0.15": "clip(x + 0.15, 0, 1)",
    "clahe": "kornia CLAHE per plane (s2unet.data.intensity.clahe: clip limit 2, 8 x 8 tiles)",
}


@dataclass
class ShiftCase:
    """A case ready to be shifted: the opened image, its full scale and its reference."""

    case: Case
    image: CaseImage
    levels: int
    target: np.ndarray


def stored_levels(image: CaseImage, data: DataConfig) -> int:
    """The full scale of a case's stored values, which a shift works in (255 or 65535).

    Args:
        image: the case as the model reads it (``read_case`` with its ``data.kind``).
        data: the model's data config (its window decides how stored values become 0..1).

    Returns:
        255 for 8-bit data, 65535 for 16-bit data.

    Raises:
        DataError: one line naming the file: values that are not 8/16-bit unsigned (Hounsfield
            units, float or scaled data), or a model that windows them as Hounsfield units.
    """
    if image.values == "unit":  # a 2D picture read for an image model: its file's own type counts
        dtype, what = read_raw(image.path).dtype, f"{image.format.name} pixels"
    else:
        dtype, what = image.dtype, f"{image.format.name} values"
    if dtype not in LEVELS:
        raise DataError(f"{image.path}: {dtype} {what} (Hounsfield units, float or scaled data); intensity shifts "
                        "apply only to uint8/uint16 data read as 0..1 (a window shift would be the test there)")
    if image.values == "stored" and window_bounds(data.window) is not None:
        raise DataError(f"{image.path}: the model windows its {dtype} values as Hounsfield units (data.window.preset "
                        f"{data.window.preset}); intensity shifts apply only to data read as 0..1 (window none or auto)")
    return LEVELS[dtype]


def requantise(planes: np.ndarray, shift: Shift, levels: int, stored: bool = True) -> np.ndarray:
    """A shift of 0..1 intensities applied to stored planes, rounded back to the stored steps.

    Args:
        planes: (planes, H, W) stored values (``stored``: integers of full scale ``levels``) or
            0..1 floats in steps of ``1 / levels`` (a picture read as 0..1).
        shift: a map of 0..1 intensities of (planes, H, W) arrays (see :data:`SHIFTS`).
        levels: full scale of the stored values (:func:`stored_levels`).
        stored: whether ``planes`` hold stored integers (else 0..1 floats).

    Returns:
        The shifted planes in the input's dtype and convention, clipped to 0..1 of full scale.
    """
    full = np.float32(levels)
    unit = planes.astype(np.float32) / full if stored else planes.astype(np.float32)
    out = np.rint(np.clip(shift(unit), 0.0, 1.0) * full)
    return out.astype(planes.dtype) if stored else out.astype(np.float32) / full


def shift_image(image: CaseImage, shift: Shift, levels: int, axis: int) -> CaseImage:
    """The case as a source with another intensity mapping would have stored it.

    Args:
        image: the opened case.
        shift: a map of 0..1 intensities of (planes, H, W) arrays (see :data:`SHIFTS`).
        levels: full scale of the stored values (:func:`stored_levels`).
        axis: served slice axis of a volume (``data.axis``); CLAHE works on its planes.

    Returns:
        An in-memory CaseImage with the same geometry, format and value convention, whose values
        are the shifted ones rounded to the stored type (for a 0..1 picture: to multiples of
        ``1 / levels``).
    """
    planes = image.picture()[None] if image.planar else np.moveaxis(image.get_array(), axis, 0)
    out = requantise(planes, shift, levels, image.values == "stored")
    # Back to the on-disk layout the CaseImage keeps (a picture is stored (W, H, 1)).
    data = out[0].T[..., None] if image.planar else image.to_original(np.moveaxis(out, 0, axis))
    stored = nib.Nifti1Image(np.ascontiguousarray(data), image.original_affine, image.header)
    return CaseImage(image.path, stored, image.orientation or False, image.format, image.values, image.extra)


def prepare_cases(loaded: LoadedModel, split: str, max_cases: int) -> list[ShiftCase]:
    """Open a checkpoint's split cases and refuse, before any prediction, what cannot be shifted.

    Args:
        loaded: the checkpoint.
        split: ``train``, ``val`` or ``test``.
        max_cases: the first N cases of the split (0 = all).

    Returns:
        The cases with their full scale and reference.

    Raises:
        DataError: a box-prompted model (its prompts come from the reference), a run without
            cases in that split, or a case :func:`stored_levels` refuses.
    """
    cfg = loaded.config
    if get_architecture(cfg.model.arch).needs_reference(cfg.model):
        raise DataError(f"{loaded.path}: a box-prompted SAM takes its boxes from the reference masks; "
                        "this benchmark scores automatic models only")
    cases = run_split_cases(loaded.path.parent, cfg.data, split)[: max_cases or None]
    if not cases:
        raise DataError(f"{loaded.path.parent / 'split.json'} lists no {split} cases")
    out = []
    for case in cases:
        image = read_case(case.image, cfg.data.kind, cfg.data.served)
        out.append(ShiftCase(case, image, stored_levels(image, cfg.data), load_case_target(case, cfg)))
    return out


def case_dice(predictor: Predictor, prob: np.ndarray, target: np.ndarray, names: Sequence[str],
              slice_axis: Optional[int], threshold: Optional[float] = None,
              slices: Optional[Sequence[int]] = None) -> float:
    """A case's Dice as validation and ``infer.py --gt`` score it: binarised (at the predictor's
    threshold unless given), post-processed by the config (whole), the mean over its labels;
    ``slices`` scores only those planes along ``slice_axis``, as validation scores a partly
    labelled volume."""
    pred = predictor.clean(predictor.binarize(prob, threshold), slice_axis)
    if slices is not None:
        pred, target = np.take(pred, slices, axis=1 + slice_axis), np.take(target, slices, axis=1 + slice_axis)
    return float(metric_row(pred, target, names)["dice"])


def score_checkpoint(loaded: LoadedModel, cases: Sequence[ShiftCase], shifts: Sequence[str]) -> dict[str, Any]:
    """Dice of one checkpoint on its cases under each shift.

    Args:
        loaded: the checkpoint.
        cases: from :func:`prepare_cases`.
        shifts: names in :data:`SHIFTS`.

    Returns:
        Per shift: ``mean_dice`` (over cases; a case's Dice is the mean over its labels),
        ``per_case`` Dice and ``empty_references`` (cases whose reference is empty: Dice 1 when
        nothing is predicted, else 0).
    """
    cfg = loaded.config
    predictor = Predictor(loaded.model, cfg, threshold=loaded.threshold, text=loaded.structure_text,
                          calibration=loaded.calibration)
    names = foreground_names(cfg)
    empty = sum(not item.target.any() for item in cases)
    result: dict[str, Any] = {}
    for name in shifts:
        per_case = {}
        for item in cases:
            shifted = shift_image(item.image, SHIFTS[name], item.levels, cfg.data.axis)
            prob = predictor.predict_picture(shifted) if shifted.planar else predictor.predict_volume(shifted)
            per_case[item.case.case_id] = case_dice(predictor, prob, item.target, names,
                                                    None if shifted.planar else cfg.data.axis)
        result[name] = {"mean_dice": float(np.mean(list(per_case.values()))), "per_case": per_case,
                        "empty_references": empty}
        print(f"  {name}: Dice {result[name]['mean_dice']:.4f}", flush=True)
    return result


def prepared_runs(paths: Sequence[str], prepare: Callable[[LoadedModel], Any]) -> Optional[list[tuple[LoadedModel, Any]]]:
    """Every checkpoint loaded and its cases prepared, all before the first prediction.

    Returns:
        ``(checkpoint, prepare(checkpoint))`` per path, or None after printing the one-line
        error of a refused checkpoint or case to stderr.
    """
    try:
        return [(loaded, prepare(loaded)) for loaded in map(load_model_checkpoint, paths)]
    except (CheckpointError, ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def run_facts(start: float) -> dict[str, Any]:
    """What a shift benchmark's JSON records of its run: wall seconds since ``start``, load, machine, versions."""
    return {"seconds": round(time.perf_counter() - start, 1), "load_average_at_end": load_average(),
            "machine": machine_info(), "versions": environment_versions()}


def markdown(result: dict[str, Any]) -> str:
    """The short report: one row per checkpoint, mean Dice per shift (change against identity)."""
    shifts = result["shifts"]
    rows = []
    for ck in result["checkpoints"]:
        base = ck["shifts"]["identity"]["mean_dice"] if "identity" in ck["shifts"] else None
        cells = [f"{ck['shifts'][s]['mean_dice']:.3f}" + ("" if base is None or s == "identity"
                                                         else f" ({ck['shifts'][s]['mean_dice'] - base:+.3f})")
                 for s in shifts]
        rows.append([ck["name"], ck["normalize"], f"{len(ck['cases'])} ({ck['empty_references']} empty)", *cells])
    table = markdown_table(["checkpoint", "data.normalize", "cases", *shifts], rows)
    return (f"`{result['command']}` ({result['split']} split, threshold and post-processing of each checkpoint; "
            f"{result['seconds']:.0f} s, load average at the end {result['load_average_at_end']})\n\n{table}\n")


def chosen(parser: argparse.ArgumentParser, flag: str, text: str, known: Sequence[str]) -> list[str]:
    """The names of a comma-separated option, each one of ``known`` (else the parser's usage error)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in known]
    if unknown or not names:
        parser.error(f"{flag}: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; returns the exit code (2 with one error line for refused input)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True, help="a run's best.pt (repeatable)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--max-cases", type=int, default=0, help="the first N cases of the split (0 = all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--shifts", default=",".join(SHIFTS), help="comma-separated subset of: " + ", ".join(SHIFTS))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "intensity_shift"),
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)
    shifts = chosen(parser, "--shifts", args.shifts, SHIFTS)
    if args.max_cases < 0 or args.threads < 1:
        parser.error("--max-cases must be >= 0 and --threads >= 1")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    runs = prepared_runs(args.checkpoint, lambda loaded: prepare_cases(loaded, args.split, args.max_cases))
    if runs is None:
        return 2
    checkpoints = []
    for loaded, cases in runs:
        print(f"{loaded.path}: {len(cases)} {args.split} cases", flush=True)
        scores = score_checkpoint(loaded, cases, shifts)
        checkpoints.append({
            "checkpoint": str(loaded.path), "name": loaded.path.resolve().parent.name, "config_name": loaded.config.name,
            "normalize": loaded.config.data.normalize, "threshold": loaded.threshold,
            "cases": [item.case.case_id for item in cases], "empty_references": scores[shifts[0]]["empty_references"],
            "shifts": scores,
        })
    command = command_line("intensity_shift.py", argv)
    result = {"command": command, "split": args.split, "max_cases": args.max_cases, "threads": args.threads,
              "shifts": {s: SHIFT_DESCRIPTIONS[s] for s in shifts}, "checkpoints": checkpoints, **run_facts(start)}
    write_result(Path(args.out), result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
