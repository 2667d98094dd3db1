"""Discover cases: pair each image (or volume) with its label file(s) by file stem.

The stem is the file name without the suffix of its format (the registry of
:mod:`s2unet.io.formats`: ``.nii.gz``, ``.mha``, ``.png``, ...; a DICOM series folder is named by
the folder), so ``images/JPCLN001.png`` pairs with
``masks/lungs/JPCLN001.png`` and ``images/case00.nii.gz`` with ``masks_infection/case00.nii``.
An nnU-Net v2 dataset pairs ``imagesTr/case00_0000.nii.gz`` with ``labelsTr/case00.nii.gz``
(:func:`~s2unet.io.discovery.case_id`; its ``dataset.json`` labels fill the config, :mod:`s2unet.config.loading`).
A missing label does not raise here: the case lists the path where the label was expected
and the pre-flight check (:mod:`s2unet.data.check`) reports every missing pair at once.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DataConfig
from ..io.discovery import discover_cases
from ..io.formats import case_stem
from .errors import DataError


@dataclass
class Case:
    """One patient / image: its id, image file and one label file per label folder.

    Attributes:
        case_id: the shared file stem, also the unit of splitting.
        image: the image (2D file) or volume (NIfTI).
        labels: one path per ``DataConfig.labels`` folder, in that order. A path that does not
            exist marks a missing label (see :meth:`missing_labels`).
    """

    case_id: str
    image: Path
    labels: list[Path] = field(default_factory=list)

    def missing_labels(self) -> list[Path]:
        """Label paths that do not exist on disk."""
        return [p for p in self.labels if not p.exists()]


def case_identity(case: Case) -> dict[str, str]:
    """What names a case's data wherever it lies: its id and the sha256 of its image's bytes
    (of every file of a DICOM series folder, in path order).

    A checkpoint stores these for its training cases, so ``compare`` can tell whether its test
    cases are among them even in another folder or under other names.

    Returns:
        ``{"case": case_id, "sha256": hex digest}``.
    """
    image = Path(case.image)
    files = sorted(p for p in image.rglob("*") if p.is_file()) if image.is_dir() else [image]
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return {"case": case.case_id, "sha256": digest.hexdigest()}


def resolve_dir(cfg: DataConfig, folder: str) -> Path:
    """A config folder resolved against ``cfg.root`` (absolute folders are kept).

    Args:
        cfg: the data config.
        folder: ``cfg.images`` or an entry of ``cfg.labels``.

    Returns:
        The folder path.
    """
    return Path(cfg.root).expanduser() / Path(folder).expanduser()


def index_folder(folder: Path, kind: str) -> dict[str, Path]:
    """Map stem -> path for every file (or series folder) of the kind in a folder (not recursive).

    Args:
        folder: the folder to list.
        kind: ``"image"`` or ``"volume"``.

    Returns:
        Dict from stem to path.

    Raises:
        DataError: the folder does not exist, or two files share a stem (e.g. a.png and a.jpg).
    """
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    return {c.case_id: c.path for c in discover_cases(folder, kind, as_folder=True)}


def find_cases(cfg: DataConfig) -> list[Case]:
    """List the cases of a dataset, sorted by id.

    Args:
        cfg: the data config (``kind``, ``root``, ``images``, ``labels``).

    Returns:
        One Case per image file; labels are paired by stem in each label folder. A label that
        is not found is recorded as ``<label folder>/<stem><image suffix>`` (which does not
        exist), for the data check to report.

    Raises:
        DataError: the image folder or a label folder does not exist, or stems collide.
    """
    if cfg.kind not in ("image", "volume"):
        raise DataError(f"unknown data kind {cfg.kind!r}")
    images = index_folder(resolve_dir(cfg, cfg.images), cfg.kind)
    label_dirs = [resolve_dir(cfg, folder) for folder in cfg.labels]
    label_maps = [index_folder(folder, cfg.kind) for folder in label_dirs]
    cases: list[Case] = []
    for stem, image in sorted(images.items()):
        suffix = image.name[len(case_stem(image, cfg.kind) or stem):]  # nnU-Net: without the _0000
        labels = [found.get(stem, folder / (stem + suffix)) for folder, found in zip(label_dirs, label_maps)]
        cases.append(Case(case_id=stem, image=image, labels=labels))
    return cases


def orphan_labels(cfg: DataConfig, cases: list[Case]) -> list[Path]:
    """Label files whose stem matches no case (usually a naming mismatch).

    Args:
        cfg: the data config.
        cases: the cases found.

    Returns:
        The orphan label paths, sorted.

    Raises:
        DataError: a label folder does not exist.
    """
    ids = {c.case_id for c in cases}
    out: list[Path] = []
    for folder in cfg.labels:
        for stem, path in index_folder(resolve_dir(cfg, folder), cfg.kind).items():
            if stem not in ids:
                out.append(path)
    return sorted(out)
