"""DICOM Segmentation objects (highdicom) for predictions of DICOM inputs.

A prediction of a DICOM series or of a 2D DICOM image is also written as a binary DICOM-SEG
that PACS viewers, 3D Slicer and OHIF read: one frame per source slice and segment, each frame
referencing the SOPInstanceUID of the slice it was predicted on, one segment per label with its
name and a display colour, and the algorithm (name, version, checkpoint) that made it.

Frames follow the source files through the case's own geometry: the served prediction goes back
to the on-disk array (:meth:`~s2unet.io.case.CaseImage.to_original`), whose slice ``k`` was read
from ``case.extra["dicom_sources"][k]`` (set by the DICOM readers), so no orientation convention
is assumed here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_path
from .case import CaseImage
from .errors import DataError

#: Key of :attr:`CaseImage.extra` holding the source DICOM files, one per on-disk slice in order.
SOURCES_KEY = "dicom_sources"

#: Labels read as lesions (SNOMED "morphologically abnormal structure"); other labels are anatomy.
_LESION = re.compile(r"lesion|infection|nodule|tumou?r|opacit|consolidation|mass|cancer", re.IGNORECASE)
#: DICOM's convention for a coding scheme of one's own: ``99`` + a name.
_LABEL_SCHEME = "99S2UNET"


@dataclass(frozen=True)
class Algorithm:
    """What identifies the algorithm in the SEG's AlgorithmIdentificationSequence.

    Attributes:
        name: e.g. ``s2unet``.
        version: the software version.
        source: the checkpoint the prediction came from.
    """

    name: str
    version: str
    source: str


def dicom_sources(case: CaseImage) -> list[Path] | None:
    """The source DICOM files of ``case`` (one per on-disk slice), or None for other formats."""
    sources = case.extra.get(SOURCES_KEY)
    return None if sources is None else [Path(p) for p in sources]


def _frames(case: CaseImage, mask: np.ndarray) -> np.ndarray:
    """One label's served mask as (source slice, row, column) frames."""
    if case.planar and mask.ndim == 2:  # a picture's (H, W): rows and columns of the file
        return mask[None]
    # On-disk layout of the DICOM readers: axis 0 = column, 1 = row, 2 = source slice.
    return np.transpose(case.to_original(mask), (2, 1, 0))


def _segment(number: int, label: str, colour: str, algorithm: object) -> object:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    category = codes.SCT.MorphologicallyAbnormalStructure if _LESION.search(label) else codes.SCT.AnatomicalStructure
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=category,
        # The label is the model's own name for the structure, not a SNOMED concept.
        segmented_property_type=hd.sr.CodedConcept(label[:16], _LABEL_SCHEME, label),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_string(colour),
    )


def write_dicom_seg(case: CaseImage, masks: np.ndarray, labels: Sequence[str], colours: Sequence[str],
                    algorithm: Algorithm, path: Path) -> Path:
    """Write the binary DICOM-SEG of a prediction of a DICOM case, atomically.

    Args:
        case: a case read from DICOM (:func:`dicom_sources` is not None).
        masks: (C, *served) bool foreground channels, one per label (a picture's (C, H, W) too).
        labels: the C segment names.
        colours: matplotlib/CSS colour names, one per label (the overlay's).
        algorithm: the algorithm identification.
        path: the output file (``.dcm``).

    Returns:
        The written path.

    Raises:
        DataError: the case is not DICOM, or the masks do not match it.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = dicom_sources(case)
    if sources is None:
        raise DataError(f"{case.path}: a DICOM-SEG needs DICOM source images; this is a {case.format.name} case")
    if len(masks) != len(labels):
        raise DataError(f"{path}: {len(masks)} mask channels for {len(labels)} labels")
    frames = np.stack([_frames(case, m.astype(bool)) for m in masks], axis=-1)  # (slices, rows, cols, segments)
    images = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in sources]
    if frames.shape[:3] != (len(images), int(images[0].Rows), int(images[0].Columns)):
        raise DataError(f"{path}: prediction frames {frames.shape[:3]} do not match the {len(images)} source images of "
                        f"{images[0].Rows}x{images[0].Columns} pixels in {case.path}")
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, family=codes.DCM.ArtificialIntelligence, version=algorithm.version,
        source=algorithm.source[-64:])  # a DICOM LO holds 64 characters: keep the file name end
    segments = [_segment(i + 1, label, colours[i % len(colours)], identification)
                for i, label in enumerate(labels)]
    try:
        seg = _segmentation(hd, images, frames, segments, algorithm)
    except (AttributeError, ValueError, TypeError) as exc:  # a source without what a SEG must copy
        raise DataError(f"{sources[0]}: cannot write a DICOM-SEG from these source images ({exc})") from exc
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return path


def _segmentation(hd, images, frames, segments, algorithm: Algorithm):
    return hd.seg.Segmentation(
        source_images=images,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=9901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=algorithm.name,
        manufacturer_model_name=Path(algorithm.source).name[:64] or algorithm.name,
        software_versions=algorithm.version,
        device_serial_number="none",
        series_description=f"{algorithm.name} segmentation"[:64],
        # Every source slice keeps its frames, empty or not, so frame k of a segment is slice k.
        omit_empty_frames=False,
    )
