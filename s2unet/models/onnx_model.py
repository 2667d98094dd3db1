"""An exported ONNX model run with onnxruntime on the CPU, behind the same interface as a
PyTorch model, so ``infer.py --checkpoint model.onnx`` uses the same pre- and post-processing.

The preprocessing travels inside the file: :func:`s2unet.inference.export.export_model` stores
the run config, the tuned threshold and the validation metrics as JSON in the ONNX
``metadata_props`` under :data:`METADATA_KEY`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..config import config_from_dict
from ..weights import CheckpointError
from .base import SegmentationModel
from .checkpoint import LoadedModel

METADATA_KEY = "s2unet"


class OnnxModel(SegmentationModel):
    """``predict_logits`` through an onnxruntime session (one image input, the final logits out).

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: torch's thread count, as the PyTorch path uses).
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final logits (B, C, H, W) of a (B, 3, H, W) 0..1 batch, on the CPU."""
        (logits,) = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})
        return torch.from_numpy(logits)


def load_onnx_model(path: Path) -> LoadedModel:
    """An exported ``.onnx`` file with the config, threshold and metrics stored in it.

    Raises:
        CheckpointError: the file is missing, not ONNX, or not exported by s2unet.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in meta:
        raise CheckpointError(f"{path}: ONNX model without s2unet metadata (key {METADATA_KEY!r}); export it with "
                              "python -m s2unet export")
    info = json.loads(meta[METADATA_KEY])
    return LoadedModel(OnnxModel(path), config_from_dict(info["config"]), float(info["threshold"]),
                       dict(info.get("metrics", {})), path)
