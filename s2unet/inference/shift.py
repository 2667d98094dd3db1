"""Far-off inputs: each case's fingerprint against the checkpoint's (:mod:`s2unet.data.fingerprint`),
one warning line per case and property, and the harmonisation flags of ``infer.py``.

Properties and when they warn (:data:`LIMITS`; chosen on the shared CT, docs/inference.md):

- ``intensity``: the mean absolute shift of the body-intensity quantiles (1..99 %, 0..1 input
  scale) above 0.08;
- ``fov``: the body's bounding box covers a share of the frame's rows or columns outside
  1/1.5 .. 1.5 times the training share;
- ``pixel_size``: in-plane spacing outside 1/1.5 .. 1.5 times the training spacing (both known);
- ``orientation``: the case is served in other axcodes than the training slices were;
- ``foreground``: the predicted foreground share below 1/5 of the smallest or above 5 times the
  largest training case's share (or nothing at all where every training case had some).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from rich.console import Console
from rich.markup import escape

from ..data import CaseImage, DataError
from ..data.fingerprint import Fingerprint, measure_slice, pool, quantile_shift
from ..predict import Predictor
from ..predict.harmonise import FOV_MODES, INTENSITY_MODES, CaseHarmoniser, for_case

LIMITS: dict[str, Any] = {
    "intensity": 0.08,  # mean |quantile shift|
    "fov": [1 / 1.5, 1.5],  # ratio of the body box's share of the frame, worst axis
    "pixel_size": [1 / 1.5, 1.5],  # ratio of the in-plane spacing, worst axis
    "foreground": 5.0,  # factor beyond the training cases' range of shares
}
ADAPT = ("label a few of these slices (`python -m s2unet label --images SCANS --labels LABEL --out NEW_LABELS`), then adapt: "
         "`python train.py --config CONFIG --init-from RUN/best.pt --set data.rehearse_from=RUN/best.pt "
         "--set data.root=NEW_LABELS --set train.steps_per_epoch=60 --set train.epochs=1 --set train.lr=0.001` "
         "(README, \"Another hospital's scans\")")
_TRY = {"intensity": "try --harmonise-intensity histogram (or clahe), or ",
        "fov": "try --harmonise-fov body (or lungs), or "}


@dataclass
class CaseShift:
    """One case's comparison with the training fingerprint."""

    case: str
    fingerprint: Fingerprint
    measured: dict[str, Any] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    harmoniser: Optional[CaseHarmoniser] = None


def _ratio(a: Optional[tuple[float, float]], b: Optional[tuple[float, float]]) -> Optional[float]:
    """The per-axis ratio a / b farthest from 1 (in log), or None when either is unknown."""
    if a is None or b is None or min(b) <= 0:
        return None
    ratios = [x / y for x, y in zip(a, b)]
    return max(ratios, key=lambda r: abs(np.log(max(r, 1e-6))))


def _outside(value: float, band: list[float]) -> bool:
    return not band[0] <= value <= band[1]


def compare_inputs(case: Fingerprint, train: Fingerprint) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Compare a case's input fingerprint with the training one.

    Args:
        case: the case's (un-harmonised) fingerprint.
        train: the checkpoint's.

    Returns:
        ``(measured, found)``: the distance of each property (``intensity``: mean quantile
        shift; ``fov`` / ``pixel_size``: ratios, the axis farthest from 1; ``orientation``:
        the case's axcodes), and ``(property, what is off)`` for each beyond :data:`LIMITS`.
    """
    q = quantile_shift(case, train)
    fov = _ratio(Fingerprint.extent(case.body_box), Fingerprint.extent(train.body_box))
    pixel = _ratio(case.pixel_size, train.pixel_size)  # type: ignore[arg-type]
    measured = {"intensity": round(q, 4), "fov": None if fov is None else round(fov, 3),
                "pixel_size": None if pixel is None else round(pixel, 3), "orientation": case.orientation}
    found: list[tuple[str, str]] = []
    if q > LIMITS["intensity"]:
        direction = "brighter" if np.mean(case.intensity_quantiles) > np.mean(train.intensity_quantiles) else "darker"
        found.append(("intensity", f"the body's intensities are {direction} and spread differently than in training "
                                   f"(mean quantile shift {q:.3f} of the input range, limit {LIMITS['intensity']})"))
    if fov is not None and _outside(fov, LIMITS["fov"]):
        found.append(("fov", f"the body covers {fov:.2f} times the share of the frame it covered in training "
                             f"({'zoomed out' if fov < 1 else 'zoomed in'}; limits {LIMITS['fov'][0]:.2f}-{LIMITS['fov'][1]:.2f})"))
    if pixel is not None and _outside(pixel, LIMITS["pixel_size"]):
        found.append(("pixel_size", f"pixels are {pixel:.2f} times the training pixel size {train.pixel_size} mm"))
    if case.orientation is not None and train.orientation is not None and case.orientation != train.orientation:
        found.append(("orientation", f"slices are served as {case.orientation}, the training slices were {train.orientation}"))
    return measured, found


class ShiftCheck:
    """The run's comparison of cases with the checkpoint's fingerprint, and its harmonisation.

    Args:
        fingerprint: the checkpoint's (payload), or None for a checkpoint written before them.
        source: the checkpoint, named in messages.
        intensity: ``--harmonise-intensity`` (:data:`~s2unet.predict.harmonise.INTENSITY_MODES`).
        fov: ``--harmonise-fov`` (:data:`~s2unet.predict.harmonise.FOV_MODES`).

    Raises:
        DataError: an unknown mode, or one that needs the fingerprint the checkpoint lacks.
    """

    def __init__(self, fingerprint: Optional[dict[str, Any]], source: str, intensity: str = "none",
                 fov: str = "none") -> None:
        if intensity not in INTENSITY_MODES:
            raise DataError(f"--harmonise-intensity {intensity!r}: use one of {', '.join(INTENSITY_MODES)}")
        if fov not in FOV_MODES:
            raise DataError(f"--harmonise-fov {fov!r}: use one of {', '.join(FOV_MODES)}")
        self.training = None if fingerprint is None else Fingerprint.from_payload(fingerprint)
        needs = [f for f, on in (("--harmonise-intensity histogram", intensity == "histogram"),
                                 (f"--harmonise-fov {fov}", fov != "none")) if on]
        if self.training is None and needs:
            raise DataError(f"{' and '.join(needs)} match the training data's fingerprint, which {source} does not "
                            "have (written before fingerprints); retrain it, or use --harmonise-intensity clahe")
        self.source, self.intensity, self.fov = source, intensity, fov
        self.cases: list[CaseShift] = []

    @property
    def available(self) -> bool:
        return self.training is not None

    def announce(self, console: Console) -> None:
        """The one line saying the check is unavailable (nothing when it is available)."""
        if not self.available:
            console.print(f"[yellow]note:[/] {self.source} has no dataset fingerprint (written before fingerprints): "
                          "inputs far from the training data cannot be detected")

    def prepare(self, predictor: Predictor, case_id: str, case: CaseImage, array: np.ndarray) -> tuple[Predictor, CaseShift]:
        """Measure a case, compare its inputs, and give the predictor that harmonises it.

        Args:
            predictor: the run's predictor.
            case_id: the case's id.
            case: the decoded case.
            array: its served volume or a picture's pixels.

        Returns:
            ``(predictor for this case, its CaseShift)``.
        """
        measures = [measure_slice(x) for x in predictor.sample_inputs(case, array)]
        size = case.in_plane_spacing(predictor.cfg.data.axis)
        orientation = case.orientation_codes
        shift = CaseShift(case_id, pool(measures, [size] * len(measures), [orientation] * len(measures)))
        self.cases.append(shift)
        if self.training is not None:
            shift.measured, found = compare_inputs(shift.fingerprint, self.training)
            for prop, what in found:
                self._warn(shift, prop, what)
        if self.intensity == "none" and self.fov == "none":
            return predictor, shift
        shift.harmoniser = for_case(shift.fingerprint, self.training, self.intensity, self.fov)
        return predictor.harmonised(shift.harmoniser), shift

    def _warn(self, shift: CaseShift, prop: str, what: str) -> None:
        shift.warnings.append({"property": prop, "message": f"{shift.case}: {prop}: {what}; Dice will likely be lower. "
                                                            f"{_TRY.get(prop, 'To fix it, ')}{ADAPT}"})

    def finish(self, shift: CaseShift, mask: np.ndarray, console: Console) -> dict[str, Any]:
        """Compare the prediction's foreground share, print the case's warnings, and give its report entries.

        Args:
            shift: from :meth:`prepare`.
            mask: the cleaned (C, *spatial) prediction.
            console: where the warning lines go.

        Returns:
            Flat ``shift_*`` / ``harmonised`` entries for the case report.
        """
        share = float(np.any(mask, axis=0).mean()) if mask.size else 0.0
        shift.measured["foreground_share"] = round(share, 6)
        cases = None if self.training is None else self.training.foreground_share_cases
        if cases is not None:
            low, high = cases[0] / LIMITS["foreground"], cases[1] * LIMITS["foreground"]
            if (share == 0.0 and cases[0] > 0) or not low <= share <= high:
                self._warn(shift, "foreground", f"{share:.2%} of the pixels predicted as foreground, where the training "
                                                f"cases had {cases[0]:.2%}-{cases[1]:.2%}")
        for warning in shift.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning['message'])}", soft_wrap=True, highlight=False)
        report: dict[str, Any] = {f"shift_{k}": v for k, v in shift.measured.items()}
        report["shift_warnings"] = ",".join(w["property"] for w in shift.warnings)
        if shift.harmoniser is not None:
            report["harmonised"] = f"intensity={self.intensity} fov={self.fov}"
        return report

    def summary(self) -> dict[str, Any]:
        """The run's ``fingerprint_check`` entry of summary.json."""
        out: dict[str, Any] = {"available": self.available, "checkpoint": self.source,
                               "harmonise": {"intensity": self.intensity, "fov": self.fov}}
        if not self.available:
            out["note"] = "the checkpoint has no dataset fingerprint (written before fingerprints): not checked"
            return out
        out["limits"] = LIMITS
        out["cases"] = {s.case: {"measured": s.measured, "warnings": s.warnings,
                                 "harmonisation": None if s.harmoniser is None else s.harmoniser.describe()}
                        for s in self.cases}
        out["cases_warned"] = sorted(s.case for s in self.cases if s.warnings)
        return out
