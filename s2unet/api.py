"""The Python API: ``s2unet.load(checkpoint or zoo name).predict(path | array | CaseImage)``.

A :class:`Segmenter` runs a checkpoint exactly as ``infer.py`` does (the same output config,
Predictor and post-processing, :mod:`s2unet.inference.segment`) and returns a
:class:`Prediction` in the input's geometry: a file's arrays in its on-disk orientation, a 2D
picture's as displayed (H, W), an array's in its own shape. Docs: ``docs/python_api.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import nibabel as nib
import numpy as np

from .data import CaseImage, DataError, count_nonfinite, read_case
from .devices import resolve_device
from .inference.run import load_for_inference
from .inference.segment import case_probabilities, check_flip_symmetric, label_arrays, make_predictor, output_config
from .io.nifti import NiftiFormat
from .io.pictures import PictureFormat
from .models.checkpoint import LoadedModel
from .predict import channel_names, foreground_names

ImageLike = Union[str, Path, np.ndarray, CaseImage]


@dataclass
class Prediction:
    """A segmentation in the input's geometry.

    Attributes:
        mask: bool (L, *spatial), one channel per name of ``label_names`` (post-processed).
        probabilities: float32 (C, *spatial) in the order of ``channel_names`` (multiclass
            models add a background channel first; otherwise the channels are the labels).
        label_names: the labels (for a text-prompted model the phrases' output names).
        channel_names: the names of the probability channels.
        case: the case it was predicted from (its geometry is written by :meth:`save`).
        task: ``binary``, ``multilabel`` or ``multiclass``.
    """

    mask: np.ndarray
    probabilities: np.ndarray
    label_names: list[str]
    channel_names: list[str]
    case: CaseImage
    task: str

    def _served(self, array: np.ndarray) -> np.ndarray:
        return self.case.to_served(array)  # a picture is served as stored

    def save(self, path: Union[str, Path]) -> list[Path]:
        """Write the mask as ``infer.py`` writes ``<case>_pred``, with the case's geometry.

        Binary: 0/1; multiclass: the class index; multilabel: one 0/1 file per label,
        ``<name>_<label><suffix>`` beside ``path``. The format follows the suffix the case's
        format writes (NIfTI, MHA/NRRD, PNG for pictures).

        Returns:
            The written files.
        """
        path = Path(path)
        arrays = label_arrays(self.mask, self.task)
        if self.task == "multilabel":
            suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
            stem = path.name[: len(path.name) - len(suffix)]
            paths = [path.with_name(f"{stem}_{name}{suffix}") for name in self.label_names]
        else:
            paths = [path]
        return [self.case.write_like(self._served(a), p, np.uint8, binary=self.task != "multiclass")
                for a, p in zip(arrays, paths)]


def _array_case(array: np.ndarray, kind: str) -> CaseImage:
    """A case for an array: 2D is a picture, 3D a volume (1 mm voxels, served as given).

    An image model reads gray values in 0..1 (uint8 is scaled by 1/255); a volume model the
    stored intensities (Hounsfield units for CT).
    """
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise DataError(f"an array to segment must be 2D (a picture) or 3D (a volume), got shape {array.shape}")
    where = Path(f"<array {'x'.join(map(str, array.shape))}>")
    if array.ndim == 3:
        if kind == "image":
            raise DataError(f"{where}: this model was trained on 2D images; give a 2D array")
        return CaseImage(where, nib.Nifti1Image(array, np.eye(4)), False, NiftiFormat(), "stored")
    values = "unit" if kind == "image" else "stored"
    if values == "unit":
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / 255.0
        elif np.nanmin(array) < 0 or np.nanmax(array) > 1:
            raise DataError(f"{where}: an image model takes gray values in 0..1 or uint8, got "
                            f"{np.nanmin(array):g}..{np.nanmax(array):g}")
    volume = np.ascontiguousarray(array.T[..., None])  # stored (W, H, 1), as PictureFormat reads
    return CaseImage(where, nib.Nifti1Image(volume, np.eye(4)), False, PictureFormat(), values)


class Segmenter:
    """A trained checkpoint ready to segment pictures and volumes (see :func:`load`).

    Args:
        loaded: the checkpoint.
        device: a torch device.
        threshold: binarisation threshold; None: the one tuned in training.
        batch_size: slices per forward pass.
        tta: average with the horizontally flipped prediction (refused for sided labels).
    """

    def __init__(self, loaded: LoadedModel, device: object, threshold: Optional[float] = None,
                 batch_size: int = 8, tta: bool = False) -> None:
        self.loaded = loaded
        self.device = device
        self.threshold = threshold
        self.batch_size = batch_size
        self.tta = tta

    @property
    def label_names(self) -> list[str]:
        """What :meth:`predict` segments by default (a text-prompted model: every known structure)."""
        return foreground_names(output_config(self.loaded)[0])

    @property
    def text_prompted(self) -> bool:
        """Whether the model takes ``text=`` phrases."""
        return self.loaded.text is not None

    def _case(self, image: ImageLike) -> CaseImage:
        cfg = self.loaded.config
        if isinstance(image, CaseImage):
            return image
        if isinstance(image, np.ndarray):
            case = _array_case(image, cfg.data.kind)
        else:
            case = read_case(image, cfg.data.kind, cfg.data.reorient)
        bad = count_nonfinite(np.asarray(case.dataobj))
        if bad:
            raise DataError(f"{case.path}: {bad} NaN/inf values; the model cannot segment them")
        return case

    def predict(self, image: ImageLike, text: Optional[Sequence[str]] = None, min_size: int = 0) -> Prediction:
        """Segment a picture or a volume.

        Args:
            image: a file (any format ``infer.py`` reads, a DICOM series folder), an array
                (2D picture / 3D volume, see :func:`_array_case`) or a CaseImage.
            text: text-prompted models: the phrases to segment, one output each (default:
                every structure the model knows).
            min_size: drop connected components smaller than this (voxels / pixels).

        Returns:
            The Prediction, in the input's geometry.

        Raises:
            DataError: an unreadable input, one of the wrong kind, NaN/inf values, phrases for
                a model that takes none.
            UnknownPhraseError: a phrase too far from every structure the model knows.
        """
        cfg, phrases = output_config(self.loaded, text=text)
        if self.tta:  # the outputs' names: a text model's phrases may be sided
            check_flip_symmetric(cfg)
        case = self._case(image)
        predictor = make_predictor(self.loaded, cfg, phrases, self.device, self.threshold, self.batch_size, self.tta)
        array = case.pixels()
        prob, slice_axis = case_probabilities(predictor, case, array)
        fg = predictor.clean(predictor.binarize(prob), slice_axis, min_size)
        # Back to the file's own orientation, channel by channel (a picture's is the served one).
        prob = np.stack([case.to_original(p) for p in prob])
        fg = np.stack([case.to_original(m) for m in fg])
        return Prediction(fg, prob, foreground_names(cfg), channel_names(cfg), case, cfg.data.task)

    def predict_volume(self, volume: ImageLike, text: Optional[Sequence[str]] = None, min_size: int = 0) -> Prediction:
        """:meth:`predict` for a volume (a 3D file, series folder or array); a 2D picture is refused."""
        case = self._case(volume)
        if case.planar:
            raise DataError(f"{case.path} is a 2D picture, not a volume; use predict()")
        return self.predict(case, text, min_size)


def load(checkpoint: Union[str, Path], device: str = "auto", threshold: Optional[float] = None,
         batch_size: int = 8, tta: bool = False) -> Segmenter:
    """Load a checkpoint (a ``best.pt`` file or a model zoo name such as ``"cxr-lungs"``).

    Args:
        checkpoint: a file, or a name of ``weights/zoo/zoo.json`` (sha256-checked).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        threshold, batch_size, tta: as ``infer.py``'s ``--threshold``, ``--batch-size``, ``--tta``.

    Raises:
        CheckpointError: not a file nor a zoo model (the known names are listed), a damaged file.
        ConfigError: a device this machine does not have.
    """
    dev = resolve_device(device, "device")
    return Segmenter(load_for_inference(checkpoint, dev), dev, threshold, batch_size, tta)
