"""Prompted SAM-family predictors: preprocessing, coordinate scaling, strict head loading, the
embedding cache, one real-weights smoke test per real model, and SAM2 on a random-weight
official-format checkpoint (the real one cannot be downloaded here)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from s2unet import weights as weights_module
from s2unet.baselines.prompted import run_prompted
from s2unet.prompts import box_around_mask, create_strategy
from s2unet.baselines.sam_predictors import (
    LITEMEDSAM,
    MOBILESAM,
    PREDICTORS,
    PromptedPredictor,
    SamFrame,
    SamHead,
    create_predictor,
    sam1_postprocess,
    sam1_preprocess,
)
from s2unet.metrics import metric_row
from s2unet.models.encoders import get_encoder_spec
from s2unet.weights import CheckpointNotFoundError

# Measured on JPCLN001, box around the right lung: LiteMedSAM 0.979, MobileSAM 0.977.
SMOKE_DICE_FLOOR = 0.9


def _stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    spec = get_encoder_spec(name)
    return spec.mean, spec.std


def test_litemedsam_preprocessing_resizes_minmaxes_and_pads() -> None:
    mean, std = _stats(LITEMEDSAM.encoder)
    assert mean == (0.0, 0.0, 0.0) and std == (1.0, 1.0, 1.0)  # LiteMedSAM: no pixel statistics
    image = np.linspace(0.2, 0.6, 100 * 200, dtype=np.float32).reshape(100, 200)
    x, frame = sam1_preprocess(np.repeat(image[..., None], 3, axis=2), 256, LITEMEDSAM.minmax, mean, std)
    assert x.shape == (1, 3, 256, 256)
    assert frame == SamFrame((100, 200), (128, 256), 256)
    content = x[..., :128, :]
    assert content.min().item() == pytest.approx(0.0, abs=1e-6)
    assert content.max().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.count_nonzero(x[..., 128:, :]) == 0


def test_mobilesam_preprocessing_uses_sam_pixel_statistics() -> None:
    mean, std = _stats(MOBILESAM.encoder)
    image = np.full((300, 600, 3), 0.5, dtype=np.float32)
    x, frame = sam1_preprocess(image, 1024, MOBILESAM.minmax, mean, std)
    assert x.shape == (1, 3, 1024, 1024) and frame.input_hw == (512, 1024)
    # SAM's pixel_mean / pixel_std on 0..255 data, here in 0..1 units.
    expected = (127.5 - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])
    np.testing.assert_allclose(x[0, :, 100, 100].numpy(), expected, atol=1e-4)
    assert torch.count_nonzero(x[..., 512:, :]) == 0  # padded after normalising, as SAM does


def test_prompt_coordinates_are_scaled_to_the_model_frame() -> None:
    lite = SamFrame.of((512, 512), 256)
    np.testing.assert_allclose(lite.boxes(np.array([[100, 50, 300, 400]])), [[50, 25, 150, 200]])
    mobile = SamFrame.of((300, 600), 1024)  # longest side 600 -> 1024, other side 512
    np.testing.assert_allclose(mobile.coords(np.array([[[300.0, 150.0]]])), [[[512.0, 256.0]]], rtol=1e-6)
    np.testing.assert_allclose(mobile.boxes(np.array([0, 0, 600, 300])), [[0, 0, 1024, 512]], rtol=1e-6)


def test_postprocessing_crops_the_padding_before_resizing() -> None:
    frame = SamFrame((100, 200), (128, 256), 256)
    low = torch.full((2, 1, 256, 256), -10.0)
    low[:, :, :128, :] = 5.0  # content region; the padded bottom half is background
    out = sam1_postprocess(low, frame)
    assert out.shape == (2, 100, 200)
    assert torch.all(out > 0)  # nothing of the padded region leaks into the image


def test_sam1_decoder_keys_are_renamed_for_the_sam2_modules() -> None:
    head = SamHead(320, 256)
    ours = set(head.state_dict())
    sam1 = {
        ("image_encoder." + k if k.startswith("neck.") else k)
        .replace(".mlp.layers.0.", ".mlp.lin1.")
        .replace(".mlp.layers.1.", ".mlp.lin2."): v
        for k, v in head.state_dict().items()
    }
    assert any(".mlp.lin1." in k for k in sam1)
    sam1["image_encoder.layers.0.whatever"] = torch.zeros(1)  # the trunk is not the head's
    assert set(SamHead.sam1_keys_to_ours(sam1)) == ours


class _CountingPredictor(PromptedPredictor):
    """Fills the prompted boxes; counts embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded = 0

    def _embed(self, image: np.ndarray) -> None:
        self.embedded += 1

    def _predict(self, boxes, points, labels, mask_input, multimask):
        h, w = self._hw
        logits = np.full((len(boxes), h, w), -20.0, dtype=np.float32)
        for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            logits[i, y0 : y1 + 1, x0 : x1 + 1] = 20.0
        return logits, np.zeros((len(boxes), 1, 256, 256), np.float32)


def test_embedding_is_cached_per_image_key_and_objects_are_united() -> None:
    pred = _CountingPredictor()
    pred.max_objects_per_batch = 1  # chunked decoding must still unite the objects
    image = np.zeros((20, 20), dtype=np.float32)
    pred.set_image(image, key=("a", 0))
    pred.set_image(image, key=("a", 0))
    assert pred.embedded == 1
    pred.set_image(image, key=("a", 1))
    assert pred.embedded == 2
    prob, low = pred.predict(boxes=np.array([[0, 0, 4, 4], [10, 10, 14, 14]]))
    assert low.shape == (2, 1, 256, 256) and prob.shape == (20, 20)
    assert (prob >= 0.5).sum() == 50


def test_unknown_predictor_name_suggests_the_closest() -> None:
    with pytest.raises(KeyError, match="did you mean 'litemedsam'"):
        create_predictor("litemedsan")


# --------------------------------------------------------------------------- real weights
@pytest.fixture(scope="module")
def right_lung(shared_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    root = shared_dir / "data" / "cxr_jsrt_scr"
    image = np.asarray(Image.open(root / "images" / "JPCLN001.png"), dtype=np.float32) / 255.0
    mask = np.asarray(Image.open(root / "masks" / "right_lung" / "JPCLN001.png")) > 127
    return image, mask


@pytest.mark.shared
@pytest.mark.parametrize("name, weights_file", [("litemedsam", "lite_medsam.pth"), ("mobilesam", "mobile_sam.pt")])
def test_real_predictor_segments_the_right_lung_from_a_box(
    name: str, weights_file: str, shared_dir: Path, right_lung: tuple[np.ndarray, np.ndarray]
) -> None:
    image, mask = right_lung
    predictor = create_predictor(name, shared_dir / "weights" / weights_file)
    predictor.set_image(image, key="JPCLN001")
    prob, low = predictor.predict_prompts(box_around_mask(mask))
    assert prob.shape == mask.shape and low.shape == (1, 1, 256, 256)
    dice = metric_row((prob >= 0.5)[None], mask[None])["dice"]
    assert dice > SMOKE_DICE_FLOOR, f"{name}: Dice {dice:.3f} with a box around the right lung"
    if name == "mobilesam":  # corrective clicks reuse the cached embedding and the last logits
        result = run_prompted(predictor, image, mask, create_strategy("iterative", {"rounds": 2}), image_key="JPCLN001")
        assert len(result.round_dice) == 3 and all(0.0 <= d <= 1.0 for d in result.round_dice)
        assert result.uses_ground_truth and result.embed_seconds > 0


# ----------------------------------------------------------------------------------- SAM2
@pytest.fixture(scope="module")
def random_sam21_tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A SAM2.1 Hiera-T checkpoint in the official format, with random weights."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    state = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu", mode="eval").state_dict()
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state}, path)
    yield path
    path.unlink()


def test_sam2_predictor_runs_on_an_official_format_checkpoint(random_sam21_tiny: Path) -> None:
    # 256 px instead of 1024 keeps the test fast; the real checkpoint runs at its own 1024.
    predictor = create_predictor("sam2.1_hiera_tiny", random_sam21_tiny, image_size=256)
    predictor.set_image(np.random.default_rng(0).random((60, 90), dtype=np.float32))
    prob, low = predictor.predict(boxes=np.array([[5, 5, 40, 30], [50, 20, 80, 55]]))
    assert predictor.low_res_size == 64  # a quarter of the input side
    assert prob.shape == (60, 90) and low.shape == (2, 1, 64, 64)
    assert np.all((prob >= 0) & (prob <= 1))
    prob, low2 = predictor.predict(points=np.array([[20, 20]]), labels=np.array([1]))
    assert low2.shape == (1, 1, 64, 64)
    prob, _ = predictor.predict(points=np.array([[20, 20], [60, 40]]), labels=np.array([1, 0]), mask_input=low2)
    assert prob.shape == (60, 90)


@pytest.mark.parametrize("name", list(PREDICTORS))
def test_every_predictor_without_its_checkpoint_raises_not_found(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("S2UNET_WEIGHTS", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError):
        create_predictor(name)
