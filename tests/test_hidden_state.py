"""No hidden global state: Hiera blocks are built, not re-classed; each volume dataset keeps the
cache budget of its own config; the weights folders searched are explicit and all named."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from sam2.modeling.backbones.hieradet import Hiera, MultiScaleBlock

from s2unet import weights as weights_module
from s2unet.config import DataConfig
from s2unet.data import SliceDataset, find_cases
from s2unet.models.encoders import create_encoder, get_encoder_spec
from s2unet.models.encoders.hiera import UnpaddedWindowBlock, hiera_trunk_kwargs
from s2unet.weights import CheckpointNotFoundError, resolve_checkpoint

HIERA_T = "configs/sam2.1/sam2.1_hiera_t.yaml"


def test_hiera_encoder_leaves_the_blocks_sam2_built_as_they_were(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[MultiScaleBlock] = []  # held here, so a swapped class would still show
    original_init = MultiScaleBlock.__init__

    def tracking_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if type(self) is MultiScaleBlock:
            built.append(self)

    monkeypatch.setattr(MultiScaleBlock, "__init__", tracking_init)
    encoder = create_encoder("sam2.1_hiera_tiny", weights="random")
    assert len(built) == len(encoder.trunk.blocks) == 12
    assert all(type(b) is MultiScaleBlock for b in built)  # no block had its class swapped
    assert all(type(b) is UnpaddedWindowBlock for b in encoder.trunk.blocks)


def test_unpadded_blocks_share_the_official_tensors_and_random_draw() -> None:
    torch.manual_seed(0)
    official = Hiera(**hiera_trunk_kwargs(HIERA_T))
    torch.manual_seed(0)
    encoder = create_encoder("sam2.1_hiera_tiny", weights="random")  # the same draw: no extra random numbers
    mine = encoder.trunk.state_dict()
    assert mine.keys() == official.state_dict().keys()
    assert all(torch.equal(mine[k], v) for k, v in official.state_dict().items())

    block = official.blocks[3]  # stage 2, windows of 4: a 6x6 map needs padding
    twin = UnpaddedWindowBlock.from_block(block)
    assert type(block) is MultiScaleBlock and twin.attn.qkv.weight.data_ptr() == block.attn.qkv.weight.data_ptr()
    x = torch.randn(1, 6, 6, block.dim)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), block(x), rtol=1e-5, atol=1e-5)


def _volume_config(root: Path, cache_mb: int) -> DataConfig:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    for folder in ("images", "labels"):
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.uint8), np.eye(4)), str(root / folder / "c0.nii.gz"))
    return DataConfig(kind="volume", root=str(root), labels=["labels"], image_size=16, axis=2, reorient=False,
                      cache_mb=cache_mb)


def test_a_dataset_keeps_its_own_cache_budget(tmp_path: Path) -> None:
    cfg = _volume_config(tmp_path, cache_mb=7)
    first = SliceDataset(find_cases(cfg), cfg, train=False)
    other = dataclasses.replace(cfg, cache_mb=1)
    second = SliceDataset(find_cases(other), other, train=False)
    first[0], second[0]  # reading does not reset anything either
    assert (first.cache.max_bytes, second.cache.max_bytes) == (7 * 2**20, 1 * 2**20)
    shared = SliceDataset(find_cases(other), other, train=False, cache=first.cache)
    assert shared.cache is first.cache and first.cache.max_bytes == 7 * 2**20


def test_a_missing_checkpoint_names_every_folder_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("S2UNET_WEIGHTS", str(tmp_path / "mine"))
    monkeypatch.setenv("S2UNET_SHARED", str(tmp_path / "elsewhere"))
    (tmp_path / "mine").mkdir()
    with pytest.raises(CheckpointNotFoundError) as err:
        resolve_checkpoint("mobile_sam")
    message = str(err.value)
    assert f"{tmp_path / 'mine'} ($S2UNET_WEIGHTS)" in message
    assert f"{tmp_path / 'repo' / 'weights'} (the checkout's weights folder, missing)" in message
    assert f"{tmp_path / 'elsewhere' / 'weights'} ($S2UNET_SHARED/weights, missing)" in message
    assert get_encoder_spec("mobilesam_tinyvit").checkpoint.url in message


def test_the_shared_folder_is_found_through_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.delenv("S2UNET_WEIGHTS", raising=False)
    monkeypatch.setenv("S2UNET_SHARED", str(tmp_path / "data_and_weights"))
    (tmp_path / "data_and_weights" / "weights").mkdir(parents=True)
    target = tmp_path / "data_and_weights" / "weights" / "mobile_sam.pt"
    target.write_bytes(b"")
    assert resolve_checkpoint("mobile_sam") == target
    monkeypatch.delenv("S2UNET_SHARED")
    (tmp_path / "shared" / "weights").mkdir(parents=True)  # beside the (fake) checkout
    (tmp_path / "shared" / "weights" / "mobile_sam.pt").write_bytes(b"")
    assert resolve_checkpoint("mobile_sam") == tmp_path / "shared" / "weights" / "mobile_sam.pt"


def test_a_missing_default_checkpoint_names_the_encoders_that_run_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.delenv("S2UNET_SHARED", raising=False)
    monkeypatch.setenv("S2UNET_WEIGHTS", str(tmp_path / "mine"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mobile_sam.pt").write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError) as err:
        weights_module.locate_default_checkpoint(get_encoder_spec("sam2.1_hiera_tiny"))
    message = str(err.value)
    assert message.endswith(f"run with --set model.encoder=mobilesam_tinyvit ({tmp_path / 'mine' / 'mobile_sam.pt'}).")
    (tmp_path / "mine" / "mobile_sam.pt").unlink()
    with pytest.raises(CheckpointNotFoundError) as err:
        weights_module.locate_default_checkpoint(get_encoder_spec("sam2.1_hiera_tiny"))
    assert "model.encoder=" not in str(err.value)
