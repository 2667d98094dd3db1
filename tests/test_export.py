"""``python -m s2unet export``: the ONNX file of a real (random-weight MobileSAM TinyViT) model
gives PyTorch's logits under onnxruntime, at another batch size than the one exported, and
``infer.py --checkpoint model.onnx`` writes the same masks as the checkpoint."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
import pytest
import torch

from s2unet.cli import main
from s2unet.config import config_from_dict
from s2unet.inference import InferenceOptions, run_inference
from s2unet.models import create_model_from_config
from s2unet.models.checkpoint import atomic_save, load_model_checkpoint, model_payload


@pytest.mark.slow  # the dynamo exporter takes minutes on 2 cores
def test_onnx_export_matches_pytorch_and_runs_in_infer(tmp_path: Path) -> None:
    cfg = config_from_dict({
        "model": {"encoder": "mobilesam_tinyvit", "weights": "random", "decoder_channels": [16, 16, 16]},
        "data": {"kind": "volume", "image_size": 64, "labels": ["infection"]},
    })
    checkpoint = tmp_path / "best.pt"
    atomic_save(model_payload(create_model_from_config(cfg), cfg, 0.5, {"dice": 0.0}), checkpoint)
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--output", str(onnx_file)]) == 0

    model = load_model_checkpoint(checkpoint, torch.device("cpu")).model.eval()
    x = torch.rand(3, 3, 64, 64)  # exported with a batch of 2: the batch is dynamic
    with torch.no_grad():
        expected = model.predict_logits(x).numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert got.shape == expected.shape == (3, 1, 64, 64)
    assert float(np.max(np.abs(got - expected))) < 1e-3
    assert np.mean((got >= 0) == (expected >= 0)) > 0.999

    volume = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "ct01.nii.gz"))
    for name, source in (("pt", checkpoint), ("onnx", onnx_file)):
        run_inference(source, tmp_path / "ct01.nii.gz", tmp_path / name, InferenceOptions(surface=False, show_progress=False))
    masks = [np.asarray(nib.load(str(tmp_path / n / "ct01_pred.nii.gz")).dataobj) for n in ("pt", "onnx")]
    assert np.mean(masks[0] == masks[1]) > 0.999
