"""SAM2 Hiera encoders: loading official-format checkpoints, checkpoint errors, shapes, adapter sites.

The official checkpoints cannot be downloaded here, so each official model is built by the
``sam2`` package from its own config (random weights) and saved in the official format.
"""
from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sam2.build_sam import build_sam2
from sam2.modeling.backbones.hieradet import MultiScaleBlock
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from s2unet import weights as weights_module
from s2unet.models.encoders import create_encoder
from s2unet.models.encoders.hiera import OFFICIAL_SAM2, UnpaddedWindowBlock
from s2unet.weights import CheckpointError, CheckpointNotFoundError, known_checkpoints, verify_sha256

OFFICIAL = [(name, config) for name, config, *_ in OFFICIAL_SAM2]
SAM21_LARGE = OFFICIAL[-1]
TRUNK = "image_encoder.trunk."

OfficialFile = tuple[str, Path, dict[str, torch.Tensor]]


@pytest.fixture(scope="module", params=OFFICIAL, ids=[name for name, _ in OFFICIAL])
def official_file(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OfficialFile]:
    """An official-format checkpoint of one SAM2 model, built once per module and deleted after.

    Yields:
        The encoder name, the file (named as the official one), and its trunk tensors keyed as
        in the encoder's ``state_dict()``.
    """
    name, config = request.param
    torch.manual_seed(0)
    state = build_sam2(config, ckpt_path=None, device="cpu", mode="eval").state_dict()
    trunk = {k.removeprefix("image_encoder."): v for k, v in state.items() if k.startswith(TRUNK)}
    # Hiera starts its position embeddings at zero and its norms at one, so a load that did
    # nothing would still compare equal: make every trunk tensor distinctive.
    for tensor in trunk.values():
        tensor.normal_()
    path = tmp_path_factory.mktemp(name) / known_checkpoints()[name].filename
    torch.save({"model": state}, path)
    del state
    yield name, path, trunk
    path.unlink()


def test_official_checkpoint_loads_every_trunk_tensor_frozen(official_file: OfficialFile) -> None:
    name, path, trunk = official_file
    encoder = create_encoder(name, weights=str(path))
    loaded = encoder.state_dict()
    assert loaded.keys() == trunk.keys()
    assert all(torch.equal(loaded[k], trunk[k]) for k in trunk)
    assert not any(p.requires_grad for p in encoder.parameters())


@pytest.mark.parametrize("official_file", [SAM21_LARGE], ids=[SAM21_LARGE[0]], indirect=True)
def test_wrong_size_checkpoint_names_file_and_key(official_file: OfficialFile) -> None:
    _, path, _ = official_file
    with pytest.raises(CheckpointError) as err:
        create_encoder("sam2.1_hiera_tiny", weights=str(path))
    message = str(err.value)
    assert path.name in message and "sam2.1_hiera_tiny" in message
    assert "trunk.pos_embed has shape (1,144,7,7) in the file but (1,96,7,7) in the model" in message
    assert re.search(r"\d+ unexpected keys such as trunk\.blocks\.", message)


@pytest.fixture
def tiny_trunk_file(tmp_path: Path) -> Path:
    """A Hiera-T trunk state dict (``trunk.*`` keys, the encoder's own format)."""
    path = tmp_path / "tiny_trunk.pt"
    torch.save(create_encoder("sam2.1_hiera_tiny", weights="random").state_dict(), path)
    return path


def test_own_trunk_state_dict_loads(tiny_trunk_file: Path) -> None:
    encoder = create_encoder("sam2.1_hiera_tiny", weights=str(tiny_trunk_file))
    saved = torch.load(tiny_trunk_file, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in encoder.state_dict().items())


def test_truncated_checkpoint(tiny_trunk_file: Path) -> None:
    data = tiny_trunk_file.read_bytes()
    tiny_trunk_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(tiny_trunk_file))) as err:
        create_encoder("sam2.1_hiera_tiny", weights=str(tiny_trunk_file))
    assert err.value.__cause__ is not None


def test_not_a_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt"):
        create_encoder("sam2.1_hiera_tiny", weights=str(path))


def test_missing_keys(tiny_trunk_file: Path) -> None:
    state = torch.load(tiny_trunk_file, weights_only=True)
    del state["trunk.pos_embed"], state["trunk.blocks.3.attn.qkv.weight"]
    torch.save(state, tiny_trunk_file)
    with pytest.raises(CheckpointError, match=r"2 missing keys such as trunk\.pos_embed, trunk\.blocks\.3"):
        create_encoder("sam2.1_hiera_tiny", weights=str(tiny_trunk_file))


def test_checkpoint_without_trunk(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"model": {"sam_mask_decoder.w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"other\.pt.*image_encoder\.trunk"):
        create_encoder("sam2.1_hiera_tiny", weights=str(path))
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"other\.pt is neither"):
        create_encoder("sam2.1_hiera_tiny", weights=str(path))


def test_default_weights_found_in_weights_dir(
    tiny_trunk_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_trunk_file.rename(tmp_path / "sam2_hiera_tiny.pt")  # no published digest for this one
    monkeypatch.setenv("S2UNET_WEIGHTS", str(tmp_path))
    assert weights_module.resolve_checkpoint("sam2_hiera_tiny") == tmp_path / "sam2_hiera_tiny.pt"
    create_encoder("sam2_hiera_tiny")


def test_sha256_mismatch_through_default(
    tiny_trunk_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "sam2.1_hiera_tiny.pt"
    tiny_trunk_file.rename(fake)
    monkeypatch.setenv("S2UNET_WEIGHTS", str(tmp_path))
    with pytest.raises(CheckpointError) as err:
        create_encoder("sam2.1_hiera_tiny")
    message = str(err.value)
    assert str(fake) in message
    assert known_checkpoints()["sam2.1_hiera_tiny"].sha256 in message
    assert hashlib.sha256(fake.read_bytes()).hexdigest() in message


def test_verify_sha256_accepts_matching_digest(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"hiera")
    verify_sha256(path, hashlib.sha256(b"hiera").hexdigest().upper())


def test_missing_checkpoint_says_where_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the folder given in the environment is searched, whatever sits in the real ones.
    monkeypatch.setattr(weights_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("S2UNET_WEIGHTS", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as err:
        create_encoder("medsam2")
    message = str(err.value)
    assert "MedSAM2_latest.pt" in message and str(tmp_path) in message and "S2UNET_WEIGHTS" in message
    assert known_checkpoints()["medsam2"].url in message


@pytest.mark.parametrize("size", [256, 352])
def test_forward_shapes(size: int) -> None:
    encoder = create_encoder("sam2.1_hiera_tiny", weights="random").eval()
    with torch.no_grad():
        maps = encoder(torch.randn(1, 3, size, size))
    assert encoder.out_channels == (96, 192, 384, 768) and encoder.strides == (4, 8, 16, 32)
    expected = [(1, c, size // s, size // s) for c, s in zip(encoder.out_channels, encoder.strides)]
    assert [tuple(m.shape) for m in maps] == expected
    assert all(torch.isfinite(m).all() for m in maps)


def test_input_not_multiple_of_stride_is_refused() -> None:
    encoder = create_encoder("sam2.1_hiera_tiny", weights="random")
    with pytest.raises(ValueError, match="multiple of the encoder stride 32"):
        encoder(torch.randn(1, 3, 240, 240))


@pytest.mark.parametrize("name", ["sam2.1_hiera_tiny", "sam2_hiera_base_plus"])
def test_adapter_sites_and_lora_targets(name: str) -> None:
    encoder = create_encoder(name, weights="random")
    blocks = list(encoder.trunk.blocks)
    stage = encoder.adapter_sites("stage")
    assert len(stage) == 4
    assert [s.module for s in stage] == [blocks[0], *(blocks[e + 1] for e in encoder.trunk.stage_ends[:-1])]
    assert [s.dim for s in stage] == [encoder.out_channels[0], *encoder.out_channels[:3]]
    every = encoder.adapter_sites("block")
    assert [s.module for s in every] == blocks and all(s.channels_last for s in every + stage)

    targets = [n for n, _ in encoder.named_modules() if re.fullmatch(encoder.attention_lora_targets, n)]
    assert len(targets) == 2 * len(blocks)
    assert all(isinstance(encoder.get_submodule(n), nn.Linear) and ".attn." in n for n in targets)
    assert re.fullmatch(encoder.attention_lora_targets, "encoder.trunk.blocks.3.attn.qkv")


def _perturbed_tiny_pair() -> tuple[nn.Module, nn.Module]:
    """Hiera-T with distinctive weights, and a copy running sam2's own block code."""
    torch.manual_seed(0)
    encoder = create_encoder("sam2.1_hiera_tiny", weights="random")
    with torch.no_grad():
        for p in encoder.parameters():
            p.normal_(std=0.05)
    official = copy.deepcopy(encoder)
    for block in official.trunk.blocks:
        block.__class__ = MultiScaleBlock
    return encoder, official


@pytest.mark.parametrize("size", [256, 352])
def test_unpadded_window_blocks_match_sam2_blocks(size: int) -> None:
    # At these sizes the third and fourth stages are not whole windows (16 or 22 vs 14; 8 or 11
    # vs 7), so the padding path runs, including the q-pooling block that starts stage 4.
    encoder, official = _perturbed_tiny_pair()
    assert all(isinstance(b, UnpaddedWindowBlock) for b in encoder.trunk.blocks)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    ours, ref = encoder(x), official(x_ref)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    weights = [torch.randn_like(m) for m in ref]
    sum((m * w).sum() for m, w in zip(ours, weights)).backward()
    sum((m * w).sum() for m, w in zip(ref, weights)).backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)


def test_unpadded_window_blocks_skip_padded_projections() -> None:
    encoder, official = _perturbed_tiny_pair()
    x = torch.randn(1, 3, 256, 256)
    flops = []
    for model in (encoder, official):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
        flops.append(counter.get_total_flops())
    # Stages 3 and 4 project 28 x 28 and 14 x 14 padded maps for 16 x 16 and 8 x 8 real tokens.
    assert flops[0] < 0.85 * flops[1]
