"""CNN baselines built through create_model_from_config: shapes at 256 / 352 / odd sizes, gradients, the
checkpoint round trip, and the offline error for ImageNet weights."""
from __future__ import annotations

import pytest
import torch

from s2unet.config import config_from_dict
from s2unet.models import SegmentationModel, create_model_from_config
from s2unet.weights import CheckpointNotFoundError


def _cfg(arch: str, pretrained: bool = False):
    return config_from_dict({
        "model": {"arch": arch, "cnn_pretrained": pretrained},
        "data": {"task": "multilabel", "labels": ["masks/lungs", "masks/heart"]},
    })


@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus"])
def test_forward_backward_at_256(arch: str) -> None:
    model = create_model_from_config(_cfg(arch))
    assert isinstance(model, SegmentationModel)
    model.train()
    outputs = model(torch.rand(2, 3, 256, 256))
    assert isinstance(outputs, list) and len(outputs) == 1 and outputs[0].shape == (2, 2, 256, 256)
    outputs[-1].mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    counts = model.parameter_counts()
    assert counts["trainable"] == counts["total"] > 0


@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus"])
@pytest.mark.parametrize("size", [352, 100])
def test_other_sizes_are_padded_and_cropped(arch: str, size: int) -> None:
    model = create_model_from_config(_cfg(arch)).eval()
    with torch.no_grad():
        logits = model.predict_logits(torch.rand(1, 3, size, size))
    assert logits.shape == (1, 2, size, size)


def test_normalisation_is_inside_and_not_saved() -> None:
    model = create_model_from_config(_cfg("unet"))
    state = model.trained_state_dict()
    assert "mean" not in state and "std" not in state and all(k.startswith("net.") for k in state)
    again = create_model_from_config(_cfg("unet"))
    again.load_trained_state_dict(state)
    x = torch.rand(1, 3, 64, 64)
    model.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.predict_logits(x), again.predict_logits(x))


def test_pretrained_weights_missing_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache, whatever this machine holds
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError, match="not available offline.*cnn_pretrained=false"):
        create_model_from_config(_cfg("deeplabv3plus", pretrained=True))
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model_from_config(_cfg("unet", pretrained=True))
