"""TinyViT encoders (LiteMedSAM, MobileSAM): layout, adapter sites, strict loading of the real files.

The tests marked ``shared`` need ``$S2UNET_SHARED`` (default ``../shared``) with
``weights/lite_medsam.pth``, ``weights/mobile_sam.pt`` and the CT data, and skip otherwise.
Numerical equivalence with the published TinyViT was checked by hand when the module was written;
here a golden statistic pins the numerics and a real CT slice checks that the loaded weights
produce anatomy-aware features.
"""
from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from s2unet.models.encoders import create_encoder, get_encoder_spec
from s2unet.models.encoders.tinyvit import TinyViTEncoder
from s2unet.weights import CheckpointError

LITE, MOBILE = "litemedsam_tinyvit", "mobilesam_tinyvit"
CHANNELS = (64, 128, 160, 320)
FILES = {LITE: "lite_medsam.pth", MOBILE: "mobile_sam.pt"}
# Checkpoint tensors the encoder deliberately leaves out: the SAM neck, and MobileSAM's unused
# ImageNet classifier head.
UNUSED = re.compile(r"^(neck|norm_head|head)\.")
CT_CASE, CT_SLICE = "case00", 60


def _normalise(encoder: TinyViTEncoder, x: torch.Tensor) -> torch.Tensor:
    """Apply the encoder's expected normalisation to 0..1 RGB."""
    mean = torch.tensor(encoder.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std).view(1, 3, 1, 1)
    return (x - mean) / std


def _seeded_image(size: int) -> torch.Tensor:
    """A fixed 0..1 RGB image, independent of the global RNG state."""
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def _expected_shapes(encoder: TinyViTEncoder, h: int, w: int) -> list[tuple[int, ...]]:
    return [(1, c, h // s, w // s) for c, s in zip(encoder.out_channels, encoder.strides)]


# ---------------------------------------------------------------- without the shared folder


@pytest.fixture(scope="module")
def untrained() -> dict[str, TinyViTEncoder]:
    """One randomly initialised encoder per variant, built once (construction takes about 1 s).

    Tests that change a mode or add hooks undo it before returning.
    """
    torch.manual_seed(0)
    return {name: create_encoder(name, weights="random").eval() for name in FILES}


def test_registry_entries(untrained: dict[str, TinyViTEncoder]) -> None:
    lite, mobile = get_encoder_spec(LITE), get_encoder_spec(MOBILE)
    assert (lite.checkpoint.key, lite.default_image_size) == ("lite_medsam", 256)
    assert (mobile.checkpoint.key, mobile.default_image_size) == ("mobile_sam", 1024)
    lite_enc, mobile_enc = untrained[LITE], untrained[MOBILE]
    assert lite_enc.out_channels == mobile_enc.out_channels == CHANNELS
    assert (lite_enc.strides, lite_enc.stride) == ((1, 2, 4, 4), 4)
    assert (mobile_enc.strides, mobile_enc.stride) == ((4, 8, 16, 16), 16)
    assert (lite.stride, mobile.stride) == (4, 16)  # from the spec, without building
    assert (lite_enc.mean, lite_enc.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert mobile_enc.mean == pytest.approx((0.485, 0.456, 0.406))
    assert mobile_enc.std == pytest.approx((0.229, 0.224, 0.225))


@pytest.mark.parametrize(("name", "hw"), [(LITE, (40, 56)), (MOBILE, (80, 112)), (MOBILE, (48, 48))])
def test_any_multiple_of_stride_runs(
    name: str, hw: tuple[int, int], untrained: dict[str, TinyViTEncoder]
) -> None:
    """Sizes that are no multiple of the attention windows exercise the window padding."""
    encoder = untrained[name]
    with torch.no_grad():
        feats = encoder(torch.randn(1, 3, *hw))
    assert [tuple(f.shape) for f in feats] == _expected_shapes(encoder, *hw)
    assert all(torch.isfinite(f).all() for f in feats)


def test_rejects_size_not_multiple_of_stride(untrained: dict[str, TinyViTEncoder]) -> None:
    encoder = untrained[MOBILE]
    with pytest.raises(ValueError, match="multiple of the encoder stride 16"):
        encoder(torch.zeros(1, 3, 72, 72))


def test_attention_bias_index_follows_first_appearance_order(untrained: dict[str, TinyViTEncoder]) -> None:
    """The stored biases are numbered by first appearance of (|dy|, |dx|) over all position pairs."""
    encoder = untrained[LITE]
    for layer, window in ((1, 7), (2, 14)):
        attn = encoder.layers[layer].blocks[0].attn
        points = list(itertools.product(range(window), range(window)))
        order: dict[tuple[int, int], int] = {}
        expected = [
            order.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(order)) for a in points for b in points
        ]
        assert torch.equal(attn.bias_index.flatten(), torch.tensor(expected))
        assert attn.attention_biases.shape[1] == len(order)


@pytest.mark.parametrize("grid", [(16, 16), (28, 28), (9, 20)])
def test_windowed_attention_equals_attention_over_zero_padded_windows(
    grid: tuple[int, int], untrained: dict[str, TinyViTEncoder]
) -> None:
    """Projecting only the real tokens gives what attention over zero-padded windows gives."""
    block = copy.deepcopy(untrained[MOBILE].layers[2].blocks[0])  # window 14, 160 channels
    torch.manual_seed(0)
    with torch.no_grad():
        for p in block.parameters():  # non-zero norm and qkv biases: padding must not project to 0
            p.normal_(std=0.1)
    h, w = grid
    ws, c = block.window_size, 160
    x = torch.randn(2, h * w, c)
    padded = F.pad(x.view(2, h, w, c), (0, 0, 0, (-w) % ws, 0, (-h) % ws))
    ph, pw = padded.shape[1:3]
    windows = padded.view(2, ph // ws, ws, pw // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
    with torch.no_grad():
        attended = block.attn(windows)
        expected = attended.view(2, ph // ws, pw // ws, ws, ws, c).transpose(2, 3).reshape(2, ph, pw, c)
        got = block._windowed_attention(x, h, w)
    torch.testing.assert_close(got, expected[:, :h, :w].reshape(2, h * w, c), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("placement", ["stage", "block"])
def test_adapter_sites_receive_the_block_input(placement: str, untrained: dict[str, TinyViTEncoder]) -> None:
    encoder = untrained[LITE]
    sites = encoder.adapter_sites(placement)
    depths = [len(layer.blocks) for layer in encoder.layers]
    assert len(sites) == (4 if placement == "stage" else sum(depths))
    if placement == "stage":
        assert [s.module for s in sites] == [layer.blocks[0] for layer in encoder.layers]
        assert [(s.dim, s.channels_last) for s in sites] == list(zip(CHANNELS, (False, True, True, True)))

    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        plain = encoder(x)
    seen: list[tuple[int, ...]] = []

    def make_hook(dim: int, channels_last: bool):
        def hook(module: nn.Module, args: tuple) -> tuple:
            tensor = args[0]
            assert tensor.shape[-1 if channels_last else 1] == dim
            seen.append(tuple(tensor.shape))
            return (tensor + 0.5, *args[1:])

        return hook

    handles = [s.module.register_forward_pre_hook(make_hook(s.dim, s.channels_last)) for s in sites]
    try:
        with torch.no_grad():
            hooked = encoder(x)
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == len(sites)
    assert not torch.allclose(hooked[-1], plain[-1])


def test_lora_targets_are_exactly_the_attention_projections(untrained: dict[str, TinyViTEncoder]) -> None:
    encoder = untrained[MOBILE]
    pattern = re.compile(encoder.attention_lora_targets)
    hits = [name for name, _ in encoder.named_modules() if pattern.fullmatch(name)]
    n_attention_blocks = sum(len(layer.blocks) for layer in encoder.layers[1:])
    assert len(hits) == 2 * n_attention_blocks
    assert all(isinstance(encoder.get_submodule(n), nn.Linear) for n in hits)
    assert {n.rsplit(".", 1)[-1] for n in hits} == {"qkv", "proj"}
    # Prefixed names (the encoder inside a bigger model) still match.
    assert pattern.fullmatch("encoder.trunk.layers.3.blocks.1.attn.qkv")


def test_batchnorm_keeps_its_statistics_in_train_mode(untrained: dict[str, TinyViTEncoder]) -> None:
    encoder = untrained[LITE]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        eval_out = encoder(x)
        try:
            train_out = encoder.train()(x)
            assert encoder.training
            assert not any(m.training for m in encoder.modules() if isinstance(m, nn.BatchNorm2d))
        finally:
            encoder.eval()
    for a, b in zip(eval_out, train_out):
        torch.testing.assert_close(a, b)


def test_select_weights_strips_prefix_and_drops_unused_parts(untrained: dict[str, TinyViTEncoder]) -> None:
    encoder = untrained[LITE]
    own = encoder.state_dict()
    checkpoint = {f"image_encoder.{k}": v for k, v in own.items()}
    checkpoint["image_encoder.neck.0.weight"] = torch.zeros(256, 320, 1, 1)
    checkpoint["image_encoder.norm_head.weight"] = torch.zeros(320)
    checkpoint["mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    assert encoder.select_weights(checkpoint, "x.pth").keys() == own.keys()
    with pytest.raises(CheckpointError, match=r"weird\.pt"):
        encoder.select_weights({"mask_decoder.x": torch.zeros(1)}, "weird.pt")


# ---------------------------------------------------------------- with the real checkpoints


@pytest.fixture(scope="module")
def weights_dir(shared_dir: Path) -> Iterator[Path]:
    """Point ``$S2UNET_WEIGHTS`` at the shared weights while this module's encoders load."""
    folder = shared_dir / "weights"
    absent = [f for f in FILES.values() if not (folder / f).is_file()]
    if absent:
        pytest.skip(f"{', '.join(absent)} not found in {folder}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S2UNET_WEIGHTS", str(folder))
        yield folder


@pytest.fixture(scope="module")
def loaded(weights_dir: Path) -> dict[str, TinyViTEncoder]:
    return {name: create_encoder(name).eval() for name in FILES}


@pytest.fixture(scope="module")
def ct_slice(shared_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice 60 of case00 as a (1, 3, 256, 256) 0..1 image and its (256, 256) lung mask."""
    nib = pytest.importorskip("nibabel")
    root = shared_dir / "data" / "ct_covid19_ma20"
    image_file, mask_file = root / "images" / f"{CT_CASE}.nii.gz", root / "masks_lung" / f"{CT_CASE}.nii.gz"
    if not (image_file.is_file() and mask_file.is_file()):
        pytest.skip(f"CT case {CT_CASE} not found under {root}")
    image = np.asarray(nib.load(image_file).dataobj[:, :, CT_SLICE]).T
    lung = np.asarray(nib.load(mask_file).dataobj[:, :, CT_SLICE]).T
    assert image.dtype == np.uint8
    x = torch.from_numpy(image.astype(np.float32) / 255.0)[None, None].repeat(1, 3, 1, 1)
    return x, torch.from_numpy(lung > 0)


@pytest.mark.shared
@pytest.mark.parametrize("name", [LITE, MOBILE])
def test_real_checkpoint_loads_every_tensor(
    name: str, loaded: dict[str, TinyViTEncoder], weights_dir: Path
) -> None:
    raw = torch.load(weights_dir / FILES[name], map_location="cpu", weights_only=True)
    expected = {
        k.removeprefix("image_encoder."): v
        for k, v in raw.items()
        if k.startswith("image_encoder.") and not UNUSED.match(k.removeprefix("image_encoder."))
    }
    own = loaded[name].state_dict()
    assert own.keys() == expected.keys()
    for key, tensor in own.items():
        assert torch.equal(tensor, expected[key]), key
    assert not any(p.requires_grad for p in loaded[name].parameters())


@pytest.mark.shared
def test_litemedsam_features_at_256(loaded: dict[str, TinyViTEncoder]) -> None:
    encoder = loaded[LITE]
    x = _normalise(encoder, _seeded_image(256))
    with torch.no_grad():
        first, second = encoder(x), encoder(x)
    assert [tuple(f.shape) for f in first] == _expected_shapes(encoder, 256, 256)
    assert [tuple(f.shape[-2:]) for f in first] == [(256, 256), (128, 128), (64, 64), (64, 64)]
    for a, b in zip(first, second):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)
    # Golden statistics of the neck-free final stage, recorded with this implementation after it
    # matched the published TinyViT to 3e-6 (max abs) on the same input.
    last = first[-1]
    assert last.mean().item() == pytest.approx(0.0010645, abs=2e-5)
    assert last.std().item() == pytest.approx(0.329574, rel=1e-4)


@pytest.mark.shared
@pytest.mark.parametrize("size", [256, 352])
def test_mobilesam_features_off_its_native_size(loaded: dict[str, TinyViTEncoder], size: int) -> None:
    encoder = loaded[MOBILE]
    x = _normalise(encoder, _seeded_image(size))
    with torch.no_grad():
        first, second = encoder(x), encoder(x)
    assert [tuple(f.shape) for f in first] == _expected_shapes(encoder, size, size)
    for a, b in zip(first, second):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)


@pytest.mark.shared
@pytest.mark.parametrize("name", [LITE, MOBILE])
def test_loaded_weights_change_the_features(
    name: str, loaded: dict[str, TinyViTEncoder], untrained: dict[str, TinyViTEncoder]
) -> None:
    x = _seeded_image(64)
    with torch.no_grad():
        pretrained, random_init = loaded[name](x), untrained[name](x)
    for a, b in zip(pretrained, random_init):
        assert (a - b).abs().mean() > 0.1 * b.abs().mean()


def _lung_separation(feature: torch.Tensor, lung: torch.Tensor) -> tuple[float, float]:
    """How well one feature map separates lung from the rest of the slice.

    Args:
        feature: (1, C, h, w) map.
        lung: (H, W) boolean mask.

    Returns:
        The cosine similarity of the mean feature inside vs outside the lungs, and the balanced
        accuracy of labelling each position by the nearer (cosine) of those two means.
    """
    small = F.interpolate(lung[None, None].float(), size=feature.shape[-2:], mode="area")[0, 0] > 0.5
    vectors = feature[0].flatten(1).T
    inside = small.flatten()
    mean_in, mean_out = vectors[inside].mean(0), vectors[~inside].mean(0)
    cosine = F.cosine_similarity(mean_in, mean_out, dim=0).item()
    unit = F.normalize(vectors, dim=1)
    says_lung = unit @ F.normalize(mean_in, dim=0) > unit @ F.normalize(mean_out, dim=0)
    balanced = 0.5 * (says_lung[inside].float().mean() + (~says_lung[~inside]).float().mean()).item()
    return cosine, balanced


@pytest.mark.shared
@pytest.mark.parametrize(("name", "index"), [(LITE, 2), (MOBILE, 3)])
def test_real_ct_features_separate_lung(
    name: str, index: int, loaded: dict[str, TinyViTEncoder], ct_slice: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """LiteMedSAM's 1/4-scale map (and MobileSAM's deepest map at 256 px) tell lung from body.

    Measured on case00 slice 60: LiteMedSAM cosine 0.975 and balanced accuracy 0.97 (random
    initialisation 0.988 / 0.73); MobileSAM 0.53 / 0.92 (random 0.98 / 0.72).
    """
    image, lung = ct_slice
    encoder = loaded[name]
    with torch.no_grad():
        feats = encoder(_normalise(encoder, image))
    assert all(torch.isfinite(f).all() for f in feats)
    assert feats[index].shape[-1] == 256 // encoder.strides[index]
    cosine, balanced = _lung_separation(feats[index], lung)
    assert cosine < 0.99
    assert balanced > 0.88
