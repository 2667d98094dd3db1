"""Which slices of a volume carry labels, when not all do: the ``labelled_slices.json`` manifest.

A volume's mask file holds every slice, so a volume labelled only on some slices would train its
other slices as background. The manifest (written by the label app beside the masks, or by
hand) lists the labelled slices of such volumes; datasets serve only those. A case it does not
list is labelled whole. Its format::

    {"axis": 2, "reorient": true, "orientation": "radiological-v1", "cases": {"case10": [40, 41, 57]}}

``axis``, ``reorient`` and ``orientation`` say how the slice indices were counted (``data.axis``,
``data.reorient`` and ``data.orientation`` must match them; the orientation only matters when
reoriented). A manifest without ``orientation`` was written before the orientation convention
(:data:`~s2unet.io.case.ORIENTATION`) and counts slices of the closest-RAS volume
(:data:`~s2unet.io.case.LEGACY_ORIENTATION`): it is refused for data served in the convention,
since its axial indices run the other way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..config import DataConfig
from ..io.atomic import write_json
from ..io.case import LEGACY_ORIENTATION, SERVED_AXCODES
from .cases import resolve_dir
from .errors import DataError

MANIFEST_NAME = "labelled_slices.json"


@dataclass
class LabelledSlices:
    """The labelled slices of partially labelled volumes.

    Attributes:
        path: the manifest file (named in every message).
        axis: the axis the indices run along.
        reorient: whether they count slices of the reoriented volume.
        orientation: the orientation convention of that volume (``data.orientation``).
        cases: case id -> sorted slice indices.
    """

    path: Path
    axis: int
    reorient: bool
    orientation: str
    cases: dict[str, list[int]] = field(default_factory=dict)

    def counted(self) -> tuple[int, bool, Optional[str]]:
        """How the indices were counted: axis, reorient, and the orientation when reoriented."""
        return self.axis, self.reorient, self.orientation if self.reorient else None

    def describe(self) -> str:
        """How the indices were counted, for messages."""
        return _describe(*self.counted())

    def slices_of(self, case_id: str, n_slices: int) -> Optional[list[int]]:
        """A listed case's slices, checked against its slice count; None for a case not listed.

        Raises:
            DataError: an index outside 0..n_slices-1.
        """
        ks = self.cases.get(case_id)
        if ks is None:
            return None
        bad = [k for k in ks if not 0 <= k < n_slices]
        if bad:
            raise DataError(f"{self.path}: case {case_id!r} lists slice(s) {bad} but has {n_slices} slices "
                            f"along axis {self.axis}")
        return ks


def _describe(axis: int, reorient: bool, orientation: Optional[str]) -> str:
    if not reorient:
        return f"along axis {axis} of the volume as stored"
    legacy = " (written before the orientation convention)" if orientation == LEGACY_ORIENTATION else ""
    return f"along axis {axis} of the volume served in orientation {orientation}{legacy}"


def manifest_path(cfg: DataConfig) -> Optional[Path]:
    """The manifest ``data.labelled_slices`` names: ``auto`` is ``<root>/labelled_slices.json``
    when it exists, "" is none, anything else a file relative to ``data.root`` that must exist.

    Raises:
        DataError: a named manifest that does not exist.
    """
    if not cfg.labelled_slices:
        return None
    if cfg.labelled_slices == "auto":
        path = resolve_dir(cfg, MANIFEST_NAME)
        return path if path.is_file() else None
    path = resolve_dir(cfg, cfg.labelled_slices)
    if not path.is_file():
        raise DataError(f"data.labelled_slices: {path} does not exist")
    return path


def _parse(path: Path, raw: Any) -> LabelledSlices:
    if not isinstance(raw, dict) or not isinstance(raw.get("cases"), dict):
        raise DataError(f"{path}: expected {{\"axis\": A, \"reorient\": true|false, \"cases\": {{case: [slices]}}}}")
    axis, reorient = raw.get("axis"), raw.get("reorient")
    if axis not in (0, 1, 2) or not isinstance(reorient, bool):
        raise DataError(f"{path}: 'axis' must be 0, 1 or 2 and 'reorient' true or false, got {axis!r} / {reorient!r}")
    orientation = raw.get("orientation", LEGACY_ORIENTATION)
    if orientation not in SERVED_AXCODES:
        raise DataError(f"{path}: 'orientation' must be one of {sorted(SERVED_AXCODES)}, got {orientation!r}")
    cases: dict[str, list[int]] = {}
    for case_id, ks in raw["cases"].items():
        if not isinstance(ks, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in ks):
            raise DataError(f"{path}: case {case_id!r} must list slice indices (whole numbers), got {ks!r}")
        if not ks:
            raise DataError(f"{path}: case {case_id!r} lists no labelled slice; label one or remove the case")
        cases[str(case_id)] = sorted(set(ks))
    return LabelledSlices(path, axis, reorient, orientation, cases)


def read_manifest(path: Path) -> LabelledSlices:
    """Read and check a manifest file.

    Raises:
        DataError: unreadable JSON or a malformed entry (naming the file and the case).
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable labelled-slices manifest ({exc})") from None
    return _parse(Path(path), raw)


def manifest_near(folder: Path) -> Optional[LabelledSlices]:
    """The manifest of a folder of masks: in it, or up to two levels above (the label app
    writes ``OUT/labelled_slices.json`` beside ``OUT/<label folder>/`` and ``OUT/masks/<label>/``).

    Raises:
        DataError: a manifest that cannot be read.
    """
    folder = Path(folder)
    for place in [folder, *folder.parents][:3]:
        if (place / MANIFEST_NAME).is_file():
            return read_manifest(place / MANIFEST_NAME)
    return None


def read_labelled_slices(cfg: DataConfig, case_ids: Sequence[str]) -> Optional[LabelledSlices]:
    """The manifest that applies to a dataset, checked against its config and cases.

    Args:
        cfg: the data config (``labelled_slices``, ``axis``, ``reorient``, ``orientation``, ``kind``).
        case_ids: the cases found.

    Returns:
        The manifest, or None when there is none or it lists no case.

    Raises:
        DataError: a malformed manifest, slices counted along another axis or orientation
            than ``data.axis`` / ``data.reorient`` / ``data.orientation``, or a listed case that
            is not in the data.
    """
    path = manifest_path(cfg)
    if path is None:
        return None
    found = read_manifest(path)
    if not found.cases:
        return None
    wanted = (cfg.axis, cfg.reorient, cfg.orientation if cfg.reorient else None)
    if found.counted() != wanted:
        raise DataError(f"{path} counts slices {found.describe()}, but this data is sliced {_describe(*wanted)}; "
                        "its indices would name other slices: relabel them in the label app, or train with "
                        "those settings")
    unknown = sorted(set(found.cases) - set(case_ids))
    if unknown:
        raise DataError(f"{path} lists case(s) {unknown} that are not in {resolve_dir(cfg, cfg.images)}")
    return found


def write_case_slices(path: Path, case_id: str, slices: Optional[Sequence[int]], axis: int, reorient: bool,
                      orientation: str) -> None:
    """Record (or replace) one case's labelled slices in a manifest, atomically.

    Args:
        path: the manifest (created when missing).
        case_id: the case.
        slices: its labelled slice indices (at least one), or None for a case labelled whole
            (its entry is removed).
        axis: the axis they run along.
        reorient: whether they count slices of the reoriented volume.
        orientation: its orientation convention (:data:`~s2unet.io.case.ORIENTATION`).

    Raises:
        DataError: an existing manifest that is malformed or counts slices another way.
        ValueError: an empty list of slices.
    """
    if slices is not None and not len(slices):
        raise ValueError(f"{case_id}: no labelled slice to record")
    found = read_manifest(path) if Path(path).is_file() else LabelledSlices(Path(path), axis, reorient, orientation)
    if found.counted() != LabelledSlices(Path(path), axis, reorient, orientation).counted():
        raise DataError(f"{path} counts slices {found.describe()}, not {_describe(axis, reorient, orientation)}; "
                        "move it away to start a new one")
    if slices is None:
        if case_id not in found.cases:
            return
        del found.cases[case_id]
    else:
        found.cases[case_id] = sorted({int(k) for k in slices})
    write_json(Path(path), {"axis": axis, "reorient": reorient, "orientation": orientation,
                            "cases": dict(sorted(found.cases.items()))})
