"""DICOM in, DICOM-SEG out: ``infer.py`` on a DICOM series and on a 2D DICOM writes a Segmentation
that references the source SOP instances, read back here with highdicom and compared slice by
slice with the source images and with the NIfTI / PNG prediction written beside it."""
from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian,
                         SegmentationStorage, generate_uid)

from s2unet import __version__
from s2unet.config import config_from_dict
from s2unet.inference import InferenceOptions, run_inference
from test_inference import ThresholdModel, _use_model

ROWS, COLS, SLICES = 64, 48, 5
BLOB_SLICES = (1, 2)  # source files (by InstanceNumber - 1) holding the bright blob


def _dataset(sop_class: str, pixels: np.ndarray, **tags: object) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "P1", "Test^Patient", "19700101", "O"
    ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = "1.2.826.0.1.3680043.8.498.1", "1", "A1"
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "20240101", "120000", ""
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def _ct_series(folder: Path) -> list[str]:
    """A sagittal CT series (so the served RAS orientation is not the file's) whose file names run
    against the instance numbers; returns the SOPInstanceUIDs by instance number.

    x grows with the instance number, but the slice normal (row x column cosines) points to -x,
    so the reader stacks the files in reverse instance order."""
    folder.mkdir(parents=True)
    series, frame = generate_uid(), generate_uid()
    uids = []
    for k in range(SLICES):
        pixels = np.full((ROWS, COLS), 1000, np.uint16)
        if k in BLOB_SLICES:
            pixels[10:30, 5:20] = 1400  # +400 HU: inside the model's window top -> foreground
        ds = _dataset(CTImageStorage, pixels, Modality="CT", SeriesInstanceUID=series, SeriesNumber=2,
                      FrameOfReferenceUID=frame, InstanceNumber=k + 1, ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
                      ImageOrientationPatient=[0.0, 1.0, 0.0, 0.0, 0.0, -1.0],  # rows along A, columns down to I
                      ImagePositionPatient=[-10.0 + 3.0 * k, -50.0, 80.0], PixelSpacing=[0.8, 0.7],
                      SliceThickness=3.0, RescaleSlope=1.0, RescaleIntercept=-1000.0)
        ds.save_as(str(folder / f"im{SLICES - k:02d}.dcm"), enforce_file_format=True)
        uids.append(ds.SOPInstanceUID)
    return uids


def _frames_by_source(seg: hd.seg.Segmentation, uids: list[str], segment: int = 1) -> np.ndarray:
    """(slices, rows, cols) of one segment, frame k the one referencing source ``uids[k]``."""
    return np.stack([
        seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], segment_numbers=[segment],
                                          assert_missing_frames_are_empty=True)[0, ..., 0]
        for uid in uids
    ])


def test_dicom_series_gets_a_seg_referencing_each_slice_like_the_nifti(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"kind": "volume", "image_size": 64, "labels": ["infection"],
                                     "window": {"preset": "custom", "level": 0, "width": 2000}}})
    _use_model(monkeypatch, cfg, ThresholdModel([0.6], [1.0]))  # foreground where HU > 200
    uids = _ct_series(tmp_path / "in" / "ct01")
    run_inference("runs/ct/best.pt", tmp_path / "in", tmp_path / "out", InferenceOptions(show_progress=False))

    seg = hd.seg.segread(str(tmp_path / "out" / "ct01_seg.dcm"))
    assert seg.SOPClassUID == SegmentationStorage
    assert seg.SegmentationType == "BINARY" and seg.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    referenced = {ref.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for ref in s.ReferencedInstanceSequence}
    assert referenced == set(uids)
    (desc,) = seg.SegmentSequence
    assert desc.SegmentLabel == "infection" and desc.SegmentAlgorithmType == "AUTOMATIC"
    assert list(desc.RecommendedDisplayCIELabValue) == list(hd.color.CIELabColor.from_string("red").value)
    algorithm = desc.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("s2unet", __version__)
    assert algorithm.AlgorithmSource.endswith("best.pt")

    frames = _frames_by_source(seg, uids)
    expected = np.zeros((SLICES, ROWS, COLS), bool)
    expected[list(BLOB_SLICES), 10:30, 5:20] = True
    assert np.array_equal(frames.astype(bool), expected)  # the blob is on the slices that hold it
    # ... and the SEG says what the NIfTI says (NIfTI axes: column, row, slice along the normal).
    nifti = np.asarray(nib.load(str(tmp_path / "out" / "ct01_pred.nii.gz")).dataobj)
    assert np.array_equal(frames.astype(bool), np.transpose(nifti, (2, 1, 0))[::-1] > 0)


def test_a_2d_dicom_gets_a_seg_like_its_png_and_other_inputs_get_none(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"kind": "image", "task": "multilabel", "image_size": 64,
                                     "labels": ["masks/lungs", "masks/heart"]}})
    _use_model(monkeypatch, cfg, ThresholdModel([0.5, 0.25], [1.0, -1.0]))  # bright / dark
    pixels = np.full((ROWS, COLS), 30000, np.uint16)
    pixels[:20] = 60000
    pixels[40:] = 0
    (tmp_path / "in").mkdir()
    xray = _dataset(DigitalXRayImageStorageForPresentation, pixels, Modality="DX", SeriesInstanceUID=generate_uid(),
                    SeriesNumber=1, InstanceNumber=1, PresentationIntentType="FOR PRESENTATION",
                    ImagerPixelSpacing=[0.2, 0.2])
    xray.save_as(str(tmp_path / "in" / "JPC001.dcm"), enforce_file_format=True)
    Image.fromarray((pixels >> 8).astype(np.uint8)).save(tmp_path / "in" / "JPC002.png")
    run_inference("best.pt", tmp_path / "in", tmp_path / "out", InferenceOptions(show_progress=False))

    assert not (tmp_path / "out" / "JPC002_seg.dcm").exists()  # a PNG has no SOP instance to reference
    seg = hd.seg.segread(str(tmp_path / "out" / "JPC001_seg.dcm"))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lungs", "heart"]
    for number, label in ((1, "lungs"), (2, "heart")):
        frame = _frames_by_source(seg, [xray.SOPInstanceUID], number)[0]
        png = np.asarray(Image.open(tmp_path / "out" / f"JPC001_pred_{label}.png"))
        assert frame.any() and np.array_equal(frame.astype(bool), png > 0)
    assert pydicom.dcmread(str(tmp_path / "out" / "JPC001_seg.dcm")).Modality == "SEG"
