"""The labeling app's files: the cases it opens, the masks it saves, its autosave and its log.

Everything here is in the *display frame*: an X-ray as read, a CT slice ``k`` as the usual
picture (the served slice transposed, as ``compare`` shows it, see the data README). Masks of
a case are one (S, H, W) bool array per layer (S = 1 for an image).

Output layout (what ``train.py`` reads with ``data.root: OUT``, see :mod:`s2unet.data`)::

    OUT/images/<case>.<suffix>          copy of the source image or volume (skipped when the
                                        source already lives there)
    OUT/images/<case>/                  copy of a DICOM series folder (its slice files)
    OUT/<layer folder>/<case>.png       X-rays: 0/255, one folder per layer (e.g. masks/lungs)
    OUT/<layer folder>/<case>.nii.gz    volumes and DICOM series: 0/1 uint8 with the source's
                                        geometry
    OUT/labelled_slices.json            the slices of each saved volume that were labelled
                                        (edited or marked); training uses only those
    OUT/label_log.jsonl                 one line per save (time, clicks, strokes, draft Dice)
    OUT/label_app.json                  the label set the folder is bound to, and the source
                                        (path, sha256) of every saved case
    OUT/.autosave/<case>.npz            work in progress, written after every edit
    OUT/autosave_kept/                  autosaves of other labels or another image, set aside
    OUT/.label.lock                     held by the app running on the folder
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..config import WINDOW_PRESETS, WindowConfig
from ..data import CaseImage, DataError, is_hu, read_case, read_labels, volume_value_range, window_to_unit
from ..data.labelled import MANIFEST_NAME, LabelledSlices, read_manifest, write_case_slices
from ..inference.outputs import atomic_path, write_json
from ..io import OutputError, exclusive_lock, remove_stale_temporaries
from ..io.case import ORIENTATION
from ..io.discovery import FoundCase, discover_cases
from ..io.formats import describe_formats
from ..io.jsonio import dumps
from ..metrics import metric_row

#: Windows for volumes: the data's own scale, ``auto`` (lung window for HU data) and the CT
#: presets of the config, offered only on HU data (see :attr:`OpenCase.windows`).
WINDOWS: tuple[str, ...] = ("auto", "none", *WINDOW_PRESETS)
VOLUME_AXIS = 2  # slices are cut along the served third axis, the training default
LOG_NAME = "label_log.jsonl"
AUTOSAVE_DIR = ".autosave"
KEPT_DIR = "autosave_kept"
RECORD_NAME = "label_app.json"
LOCK_NAME = ".label.lock"


class AppError(Exception):
    """A problem the page shows the user as one line (bad file, unwritable folder...)."""


@dataclass(frozen=True)
class Layer:
    """One label: its name and the folder (relative to the output) its masks go to."""

    name: str
    folder: str


def layers_from(names: Sequence[str], folders: Optional[Sequence[str]] = None) -> list[Layer]:
    """Layers from label names and, optionally, their folders (default ``masks/<name>``).

    Args:
        names: label names, unique.
        folders: one folder per name, relative to the output folder.

    Returns:
        The layers, in order.

    Raises:
        AppError: no names, duplicates, or a folder count that differs from the names'.
    """
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        raise AppError("give at least one label name (e.g. --labels lungs)")
    if len(set(names)) != len(names):
        raise AppError(f"label names must be unique, got {names}")
    folders = list(folders) if folders is not None else [f"masks/{n}" for n in names]
    if len(folders) != len(names):
        raise AppError(f"{len(names)} label names but {len(folders)} label folders")
    for folder in folders:
        if Path(folder).is_absolute() or ".." in Path(folder).parts:
            raise AppError(f"label folder {folder!r} must be relative to the output folder")
    return [Layer(n, f) for n, f in zip(names, folders)]


# ------------------------------------------------------------------------------------ cases
#: One case to label: a 2D picture (an X-ray), a volume file or a folder holding one DICOM series.
CaseFile = FoundCase


def list_cases(source: Path) -> list[CaseFile]:
    """The cases to label: one file or DICOM series folder, or those in a folder (not recursive).

    Args:
        source: an image / NIfTI file or a DICOM series folder, or a folder of them.

    Returns:
        The cases, sorted by name.

    Raises:
        AppError: nothing to label there, two cases with one name, or a folder of DICOM files
            whose slice header cannot be read.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise AppError(f"--images {source} does not exist")
    try:
        cases = discover_cases(source, nnunet=False)
    except DataError as exc:
        raise AppError(str(exc)) from None
    if not cases and not source.is_dir():
        raise AppError(f"{source} is not an image or volume file ({describe_formats(folders=False)})")
    if not cases:
        raise AppError(f"--images {source} holds no image or volume file ({describe_formats()})")
    return cases


class OpenCase:
    """A case's pixels, read once, in the display frame.

    Args:
        case: the file.

    Raises:
        AppError: the file cannot be read (the reader's message, naming the file).
    """

    def __init__(self, case: CaseFile) -> None:
        self.case = case
        try:
            # A picture is read as an image model sees it (0..1), a volume with its intensities,
            # served in the orientation convention, so each plane shows as in 3D Slicer.
            self.image: CaseImage = read_case(case.path, case.kind, reorient=ORIENTATION)
            self._array = self.image.get_array()  # served (X, Y, Z); a picture has one slice
        except DataError as exc:
            raise AppError(str(exc)) from None
        self._range = volume_value_range(self._array)  # one scale for every slice

    @cached_property
    def digest(self) -> str:
        """The sha256 of the case's source (see :func:`content_digest`), computed once."""
        return content_digest(self.case.path)

    @property
    def n_slices(self) -> int:
        """Planes of the case (1 for an image)."""
        return int(self._array.shape[VOLUME_AXIS])

    @property
    def plane_shape(self) -> tuple[int, int]:
        """(H, W) of a plane in the display frame."""
        h, w = np.delete(np.array(self._array.shape), VOLUME_AXIS)[::-1]
        return int(h), int(w)

    @cached_property
    def windows(self) -> tuple[str, ...]:
        """The windows this case offers: none for a picture, the HU presets only for HU data."""
        if self.image.planar:
            return ()
        return WINDOWS if is_hu(self._array.dtype, self._range) else WINDOWS[:2]

    def plane(self, k: int, window: str = "auto") -> np.ndarray:
        """Plane ``k`` in 0..1 as shown (and as the prompted model sees it).

        Args:
            k: slice index (0 for images).
            window: volumes: one of :attr:`windows` (pictures are already in 0..1).

        Returns:
            (H, W) float32 in 0..1 (NaN pixels as 0).
        """
        if not 0 <= k < self.n_slices:
            raise AppError(f"{self.case.case_id}: slice {k} outside 0..{self.n_slices - 1}")
        served = np.take(self._array, k, axis=VOLUME_AXIS)
        if self.image.planar:
            return np.nan_to_num(served.T, nan=0.0)
        if window not in self.windows:
            why = "a HU preset, and this volume is not in HU" if window in WINDOWS else "unknown"
            raise AppError(f"{self.case.case_id}: window {window!r} is {why}; choose one of {', '.join(self.windows)}")
        return window_to_unit(served, WindowConfig(preset=window), self._range).T

    def to_display(self, served: np.ndarray) -> np.ndarray:
        """A served (X, Y, Z) volume-shaped array as (S, H, W) display planes."""
        return np.ascontiguousarray(np.moveaxis(served, VOLUME_AXIS, 0).transpose(0, 2, 1))

    def to_served(self, planes: np.ndarray) -> np.ndarray:
        """(S, H, W) display planes back to the served volume shape (inverse of :meth:`to_display`)."""
        return np.ascontiguousarray(np.moveaxis(planes.transpose(0, 2, 1), 0, VOLUME_AXIS))


# ----------------------------------------------------------------------------------- output
def content_digest(path: Path) -> str:
    """The sha256 of a case's source: a file's bytes, or a DICOM folder's file names and bytes."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with f.open("rb") as stream:
            digest.update(hashlib.file_digest(stream, "sha256").digest())
    return digest.hexdigest()


def _read_record(out: Path) -> dict[str, Any]:
    """The output's ``label_app.json`` (``{}`` when there is none).

    Raises:
        AppError: the file is not a JSON object.
    """
    path = out / RECORD_NAME
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AppError(f"{path} is unreadable ({exc}); it records the labels and saved cases of {out}") from None
    if not isinstance(record, dict):
        raise AppError(f"{path} is not a JSON object; it records the labels and saved cases of {out}")
    return record


def _label_set(layers: Sequence[Layer]) -> list[dict[str, str]]:
    return [{"name": layer.name, "folder": layer.folder} for layer in layers]


def bind_labels(out: Path, layers: Sequence[Layer]) -> None:
    """Tie the output folder to one label set: record it the first time, refuse another later.

    One label set per folder keeps ``labelled_slices.json`` (one slice list per case, for all
    its labels) true: another label set would list the slices labelled for one label as
    labelled for the other's masks too.

    Raises:
        AppError: the folder was labelled with another label set (the message names both).
    """
    record = _read_record(out)
    ours = _label_set(layers)
    if "labels" not in record:
        write_json(out / RECORD_NAME, {**record, "labels": ours})
        return
    if record["labels"] != ours:
        def show(labels: list[dict[str, str]]) -> str:
            return ", ".join(f"{x['name']} ({x['folder']})" for x in labels)

        raise AppError(f"{out} holds labels {show(record['labels'])} ({out / RECORD_NAME}), not {show(ours)}: "
                       "one output folder takes one label set; use another --out, or the folder's --labels")


def check_case_source(out: Path, opened: OpenCase) -> None:
    """Refuse a case whose name is saved in the output folder from another image.

    The saved case is known by the sha256 ``label_app.json`` keeps for it, or, in a folder from
    before that record, by its image copy in ``OUT/images``.

    Raises:
        AppError: the saved case came from other content (the message names both files).
    """
    case = opened.case
    saved = _read_record(out).get("cases", {}).get(case.case_id)
    if saved is not None:
        digest, where = saved["sha256"], saved["source"]
    else:
        copy = image_copy_path(out, case)
        if not copy.exists():
            return
        digest, where = content_digest(copy), str(copy)
    if digest != opened.digest:
        raise AppError(f"{out} holds a case {case.case_id!r} saved from {where}, and {case.path} has the same name "
                       "but other content: its masks are not this image's. Use another --out, or rename the file")


def _record_case(out: Path, opened: OpenCase) -> None:
    record = _read_record(out)
    cases = {**record.get("cases", {}), opened.case.case_id: {"source": str(opened.case.path.resolve()),
                                                              "sha256": opened.digest}}
    write_json(out / RECORD_NAME, {**record, "cases": dict(sorted(cases.items()))})


def image_copy_path(out: Path, case: CaseFile) -> Path:
    """Where a saved case's image (or DICOM series folder) is copied for training."""
    return out / "images" / case.path.name


def mask_path(out: Path, layer: Layer, case: CaseFile) -> Path:
    """Where a layer's mask of a case is saved."""
    return out / layer.folder / f"{case.case_id}{case.format.output_suffix_for(case.path)}"


def read_saved_masks(out: Path, layers: Sequence[Layer], opened: OpenCase) -> Optional[np.ndarray]:
    """Masks saved earlier for a case, so it reopens as it was left; None when there are none.

    Returns:
        (C, S, H, W) bool; a layer without a file is empty.

    Raises:
        AppError: a saved mask that cannot be read or has another shape than the case.
    """
    paths = [mask_path(out, layer, opened.case) for layer in layers]
    if not any(p.is_file() for p in paths):
        return None
    shape = (opened.n_slices, *opened.plane_shape)
    masks = np.zeros((len(layers), *shape), dtype=bool)
    for c, path in enumerate(paths):
        if not path.is_file():
            continue
        try:
            labels = read_labels(path, reorient=ORIENTATION, mask_threshold=0.5, label_map=False) > 0
            plane = labels[None] if opened.image.planar else opened.to_display(labels)
        except DataError as exc:
            raise AppError(f"saved mask unreadable: {exc}") from None
        if plane.shape != shape:
            raise AppError(f"saved mask {path} has shape {plane.shape[1:]} but the case has {shape[1:]}")
        masks[c] = plane
    return masks


def saved_labelled(out: Path, opened: OpenCase) -> np.ndarray:
    """(S,) bool: the slices a saved case was labelled on (every slice of a case the manifest
    does not list, as training reads it).

    Raises:
        AppError: an unreadable manifest, or one listing a slice outside the case.
    """
    labelled = np.ones(opened.n_slices, dtype=bool)
    path = out / MANIFEST_NAME
    if opened.image.planar or not path.is_file():
        return labelled
    try:
        found = read_manifest(path)
        ours = LabelledSlices(path, VOLUME_AXIS, True, ORIENTATION)
        if found.counted() != ours.counted():
            raise DataError(f"{path} counts slices {found.describe()}, but the app counts them {ours.describe()}: "
                            "move it away to label anew")
        listed = found.slices_of(opened.case.case_id, opened.n_slices)
    except DataError as exc:
        raise AppError(str(exc)) from None
    if listed is not None:
        labelled[:] = False
        labelled[listed] = True
    return labelled


def check_writable(out: Path) -> Optional[str]:
    """Why the output folder cannot be written, or None when it can (tested by writing)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"output folder {out} cannot be written ({exc.strerror or exc}); choose another --out"
    return None


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy a case's file, or its series folder, so that ``dst`` appears only complete."""
    with atomic_path(dst) as tmp:
        if src.is_dir():
            try:
                shutil.copytree(src, tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # atomic_path removes a left-over file, not a folder
                raise
        else:
            shutil.copyfile(src, tmp)


def save_masks(out: Path, layers: Sequence[Layer], opened: OpenCase, masks: np.ndarray,
               labelled: np.ndarray, overwrite: bool) -> list[Path]:
    """Write a case's masks in the training layout, a volume's labelled slices to the output's
    ``labelled_slices.json`` and the case's source to ``label_app.json``.

    The masks are written completely under temporary names first, so a write that fails (full
    disk, read-only folder) changes neither the masks nor the manifest. Then the manifest is
    written, then the masks are renamed into place: if saving stops between the two, training
    finds a listed case with its old masks or none (the data check refuses it), never new masks
    whose unlabelled slices pass for background.

    Args:
        out: the output folder.
        layers: the layers, one per mask channel.
        opened: the case.
        masks: (C, S, H, W) bool masks in the display frame.
        labelled: (S,) bool, the slices labelled (volumes; an image is labelled whole).
        overwrite: replace mask files that exist; when False they are refused.

    Returns:
        The mask files written.

    Raises:
        FileExistsError: a mask exists and ``overwrite`` is False (nothing written); the
            message lists the files.
        AppError: a volume without a labelled slice, a case of this name saved from another
            image, or the folder cannot be written (nothing written but possibly the image copy).
    """
    case = opened.case
    slices = np.flatnonzero(labelled).tolist()
    if not opened.image.planar and not slices:
        raise AppError(f"{case.case_id}: no slice is marked labelled. Edit or mark (L) the slices you labelled, "
                       "or mark all slices, so that training knows which slices to use")
    check_case_source(out, opened)
    paths = [mask_path(out, layer, case) for layer in layers]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError("already saved: " + ", ".join(str(p) for p in existing))
    try:
        image_copy = image_copy_path(out, case)
        if not image_copy.exists():
            _copy_atomic(case.path, image_copy)
        with ExitStack() as staged:  # leaving it renames the staged masks into place
            for c, path in enumerate(paths):
                opened.image.write_like(opened.to_served(masks[c]), staged.enter_context(atomic_path(path)),
                                        np.uint8, binary=True)
            _record_case(out, opened)
            if not opened.image.planar:  # a volume labelled whole is not listed
                write_case_slices(out / MANIFEST_NAME, case.case_id, None if labelled.all() else slices,
                                  VOLUME_AXIS, reorient=True, orientation=ORIENTATION)
    except (OSError, DataError) as exc:
        raise AppError(f"cannot save {case.case_id} to {out}: {exc}") from None
    return paths


# ------------------------------------------------------------------------------ bookkeeping
@dataclass
class CaseStats:
    """What labeling a case took, for the log.

    Attributes:
        seconds: active time: the gaps between consecutive edits, each capped at
            :attr:`IDLE_CAP` seconds so that a tab left open overnight does not count.
        clicks: correction clicks (add and remove).
        strokes: brush and eraser strokes.
        boxes: boxes drawn for a box-prompted draft.
        last_event: wall time of the last edit (not logged).
    """

    IDLE_CAP = 60.0

    seconds: float = 0.0
    clicks: int = 0
    strokes: int = 0
    boxes: int = 0
    last_event: Optional[float] = field(default=None, repr=False)

    def tick(self, now: Optional[float] = None) -> None:
        """Account the time since the last event (capped) and move the mark to now."""
        now = time.time() if now is None else now
        if self.last_event is not None:
            self.seconds += min(max(0.0, now - self.last_event), self.IDLE_CAP)
        self.last_event = now

    def restart_clock(self, now: Optional[float] = None) -> None:
        """Start timing afresh (the case was just opened): the time away is not counted."""
        self.last_event = time.time() if now is None else now

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1), "clicks": self.clicks, "strokes": self.strokes, "boxes": self.boxes}


def draft_dice(layers: Sequence[Layer], masks: np.ndarray, draft: Optional[np.ndarray],
               drafted: Optional[np.ndarray]) -> dict[str, Optional[float]]:
    """Per layer, the Dice between the draft and the saved mask over the planes that had a draft.

    Args:
        layers: the layers.
        masks: (C, S, H, W) saved masks.
        draft: (C, S, H, W) the draft masks, or None when no draft was made.
        drafted: (C, S) which planes had a draft.

    Returns:
        ``{layer name: Dice}``; None for a layer that had no draft.
    """
    out: dict[str, Optional[float]] = {}
    for c, layer in enumerate(layers):
        if draft is None or drafted is None or not drafted[c].any():
            out[layer.name] = None
            continue
        planes = np.flatnonzero(drafted[c])
        row = metric_row(masks[c, planes][None], draft[c, planes][None])
        out[layer.name] = round(float(row["dice"]), 4)
    return out


def append_log(out: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to the output's ``label_log.jsonl`` (one ``write`` per line)."""
    with (out / LOG_NAME).open("a") as f:
        f.write(dumps(record, out / LOG_NAME) + "\n")


def autosave_path(out: Path, case: CaseFile) -> Path:
    return out / AUTOSAVE_DIR / f"{case.case_id}.npz"


def write_autosave(out: Path, case: CaseFile, masks: np.ndarray, labelled: np.ndarray, draft: Optional[np.ndarray],
                   drafted: Optional[np.ndarray], draft_source: str, stats: CaseStats, labels: Sequence[str],
                   source: str) -> None:
    """Keep the work in progress of a case on disk (atomic; bit-packed masks).

    Args:
        labels: the layers' names and ``source`` the case's :func:`content_digest`: an autosave
            is restored only for the same labels and image.

    Raises:
        AppError: the folder cannot be written.
    """
    meta = {"draft_source": draft_source, "labels": list(labels), "source": source, **stats.as_dict()}
    arrays: dict[str, Any] = {"shape": np.array(masks.shape), "masks": np.packbits(masks), "labelled": labelled,
                              "meta": np.array(dumps(meta, out))}
    if draft is not None and drafted is not None:
        arrays.update(draft=np.packbits(draft), drafted=drafted)
    try:
        with atomic_path(autosave_path(out, case)) as tmp:
            with tmp.open("wb") as f:
                np.savez_compressed(f, **arrays)
    except OSError as exc:
        raise AppError(f"autosave of {case.case_id} to {out} failed ({exc}); your edits are kept in memory") from None


@dataclass
class Restored:
    """A case's autosaved work."""

    masks: np.ndarray
    labelled: np.ndarray
    draft: Optional[np.ndarray]
    drafted: Optional[np.ndarray]
    draft_source: str
    stats: CaseStats


class AutosaveMismatch(AppError):
    """An autosave made for other labels or another image than the app has now."""


def _autosave_labels(z: Any) -> tuple[Optional[list[str]], dict[str, Any]]:
    """The label names an open autosave was made for (None in one from before they were kept) and its meta."""
    meta = json.loads(str(z["meta"]))
    return meta.get("labels"), meta


def _check_labels(case_id: str, theirs: Optional[list[str]], shape: tuple[int, ...], ours: Sequence[str]) -> None:
    if theirs is None:  # an autosave from before the names were kept: its layer count tells
        if shape[0] == len(ours):
            return
        shown = f"{shape[0]} label(s)"
    else:
        if list(theirs) == list(ours):
            return
        shown = f"labels [{', '.join(theirs)}]"
    raise AutosaveMismatch(f"the autosave of {case_id} was made for {shown}, this app labels [{', '.join(ours)}]")


def read_autosave(out: Path, case: CaseFile, shape: tuple[int, ...], labels: Sequence[str],
                  source: str) -> Optional[Restored]:
    """The autosaved work of a case, or None when there is none.

    Args:
        out: the output folder.
        case: the case.
        shape: the (C, S, H, W) the masks must have.
        labels: the layers' names.
        source: the case's :func:`content_digest`.

    Raises:
        AutosaveMismatch: it was made for other labels or another image (set it aside with
            :func:`keep_aside`).
        AppError: it is unreadable.
    """
    path = autosave_path(out, case)
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            theirs, meta = _autosave_labels(z)
            _check_labels(case.case_id, theirs, tuple(z["shape"]), labels)
            if meta.get("source", source) != source or tuple(z["shape"]) != tuple(shape):
                raise AutosaveMismatch(f"the autosave of {case.case_id} was made from another image than {case.path}")
            n = int(np.prod(shape))
            masks = np.unpackbits(z["masks"])[:n].reshape(shape).astype(bool)
            labelled = z["labelled"].astype(bool) if "labelled" in z else np.zeros(shape[1], dtype=bool)
            draft = np.unpackbits(z["draft"])[:n].reshape(shape).astype(bool) if "draft" in z else None
            drafted = z["drafted"].astype(bool) if "drafted" in z else None
    except (OSError, ValueError, KeyError) as exc:
        raise AppError(f"autosave {path} is unreadable ({exc}); move it away to start the case afresh") from None
    stats = CaseStats(meta.get("seconds", 0.0), meta.get("clicks", 0), meta.get("strokes", 0), meta.get("boxes", 0))
    return Restored(masks, labelled, draft, drafted, meta.get("draft_source", ""), stats)


def keep_aside(out: Path, case_id: str, why: str) -> str:
    """Move a case's autosave that cannot be restored to ``OUT/autosave_kept/`` instead of
    letting the next edit overwrite it.

    Args:
        out: the output folder.
        case_id: the case.
        why: what does not match (from :class:`AutosaveMismatch`).

    Returns:
        The message for the user: why, where the file went and how to restore it.
    """
    path = out / AUTOSAVE_DIR / f"{case_id}.npz"
    kept = out / KEPT_DIR / f"{case_id}.{time.strftime('%Y%m%d-%H%M%S')}.npz"
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, kept)
    except OSError as exc:
        raise AppError(f"{why}; it cannot be moved aside ({exc}), so the case is not opened to keep it") from None
    return (f"{why}: it is kept as {kept}. To restore it, start the app with those labels and that image (another "
            f"--out if the labels differ) and move the file to that output's {AUTOSAVE_DIR}/{case_id}.npz")


def keep_aside_other_labels(out: Path, labels: Sequence[str]) -> list[str]:
    """Set aside every autosave of the folder made for other labels (see :func:`keep_aside`).

    Returns:
        One message per autosave set aside.
    """
    notes = []
    for path in sorted((out / AUTOSAVE_DIR).glob("*.npz")):
        try:
            with np.load(path) as z:
                theirs, _ = _autosave_labels(z)
                _check_labels(path.stem, theirs, tuple(z["shape"]), labels)
        except AutosaveMismatch as exc:
            notes.append(keep_aside(out, path.stem, str(exc)))
        except (OSError, ValueError, KeyError):
            continue  # an unreadable one is reported when its case is opened
    return notes


def remove_autosave(out: Path, case: CaseFile) -> None:
    """Drop a case's autosave once its masks are saved."""
    autosave_path(out, case).unlink(missing_ok=True)


def hold_output(out: Path, layers: Sequence[Layer]) -> tuple[ExitStack, list[str]]:
    """Take the output folder for one app: lock it, bind it to the label set, clear what a killed
    app left (temporaries) and set aside autosaves of other labels.

    Args:
        out: a writable output folder.
        layers: the app's layers.

    Returns:
        The lock (close it to release the folder) and the messages of autosaves set aside.

    Raises:
        AppError: another app holds the folder, or it is bound to another label set.
    """
    held = ExitStack()
    try:
        held.enter_context(exclusive_lock(out / LOCK_NAME, f"output folder {out} (another `s2unet label`?)"))
        bind_labels(out, layers)
        remove_stale_temporaries(out)
        return held, keep_aside_other_labels(out, [layer.name for layer in layers])
    except OutputError as exc:
        held.close()
        raise AppError(str(exc)) from None
    except BaseException:
        held.close()
        raise


__all__ = [
    "AppError", "AutosaveMismatch", "CaseFile", "CaseStats", "Layer", "OpenCase", "Restored", "WINDOWS", "append_log",
    "bind_labels", "check_case_source", "check_writable", "content_digest", "draft_dice", "hold_output",
    "image_copy_path", "keep_aside", "keep_aside_other_labels", "layers_from", "list_cases", "mask_path",
    "read_autosave", "read_saved_masks", "remove_autosave", "save_masks", "saved_labelled", "write_autosave",
]
