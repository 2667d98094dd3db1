"""Checkpoint format: models rebuilt from their stored arguments, files of the first format
(written before ``model_args`` existed) loaded through the migration, newer formats refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from s2unet.config import load_config
from s2unet.models import create_model, create_model_from_config, model_args
from s2unet.models.checkpoint import (
    FORMAT_VERSION,
    atomic_save,
    load_model_checkpoint,
    migrate_checkpoint,
    model_payload,
    read_checkpoint,
)
from s2unet.weights import CheckpointError


def _cfg(*overrides: str):
    return load_config(None, ["model.encoder=mobilesam_tinyvit", "model.weights=random", "data.image_size=64",
                              *overrides])


def _format_1(model: torch.nn.Module, cfg, threshold: float = 0.4) -> dict:
    """A checkpoint exactly as s2unet wrote it before format 2 (engine/checkpoint.py model_payload
    at that time): no model_args, the model described by the config only."""
    return {
        "format": "s2unet-checkpoint",
        "format_version": 1,
        "config": cfg.to_dict(),
        "state_dict": model.trained_state_dict(),
        "threshold": float(threshold),
        "metrics": {"dice": 0.7},
        "epoch": 3,
    }


@pytest.mark.parametrize("overrides", [
    (),
    ("data.task=multilabel", "data.labels=[masks/a,masks/b,masks/c]"),
    ("data.task=multiclass", "data.num_classes=4", "model.adapter.placement=block", "model.decoder_channels=[32,16,8]"),
])
def test_a_format_1_checkpoint_loads_through_the_migration(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    cfg = _cfg(*overrides)
    model = create_model_from_config(cfg).eval()
    for p in model.decoder.parameters():  # distinctive trained tensors
        torch.nn.init.normal_(p, std=0.1)
    path = tmp_path / "best.pt"
    torch.save(_format_1(model, cfg), path)

    payload = read_checkpoint(path)
    assert payload["format_version"] == FORMAT_VERSION and payload["model_args"] == model_args(cfg)
    assert payload["epoch"] == 3  # what the migration does not touch is kept
    loaded = load_model_checkpoint(path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model.predict_logits(x), model.predict_logits(x))
    assert (loaded.threshold, loaded.metrics, loaded.config) == (pytest.approx(0.4), {"dice": 0.7}, cfg)


@pytest.mark.parametrize("version", [1, 2])
def test_a_file_written_before_a_model_key_existed_still_loads(tmp_path: Path, version: int) -> None:
    # Files written before model.prompted existed store neither the config key nor the argument:
    # the argument's default is what they were built with, and the config fills the same default.
    cfg = _cfg()
    model = create_model_from_config(cfg).eval()
    payload = _format_1(model, cfg) if version == 1 else model_payload(model, cfg, 0.4, {})
    del payload["config"]["model"]["prompted"]
    if version == 2:
        del payload["model_args"]["prompted"]
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_model_checkpoint(tmp_path / "old.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model.predict_logits(x), model.predict_logits(x))


def test_migration_leaves_its_input_alone() -> None:
    cfg = _cfg()
    old = {"format": "s2unet-checkpoint", "format_version": 1, "config": cfg.to_dict()}
    new = migrate_checkpoint(old)
    assert "model_args" not in old and old["format_version"] == 1
    assert new["model_args"]["out_channels"] == 1 and new["model_args"]["encoder"] == "mobilesam_tinyvit"


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 99])
def test_a_newer_format_is_refused_naming_the_versions(tmp_path: Path, version: int) -> None:
    cfg = _cfg()
    payload = model_payload(create_model_from_config(cfg), cfg, 0.5, {})
    payload["format_version"] = version
    atomic_save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError) as err:
        load_model_checkpoint(tmp_path / "future.pt")
    message = str(err.value)
    assert "future.pt" in message and f"format_version {version}" in message
    assert f"reads versions 1 to {FORMAT_VERSION}" in message and "newer s2unet" in message


def test_the_model_is_built_from_the_stored_arguments(tmp_path: Path) -> None:
    cfg = _cfg("model.decoder_channels=[24,12,6]")
    payload = model_payload(create_model_from_config(cfg), cfg, 0.5, {})
    assert payload["model_args"] == {"out_channels": 1, **cfg.to_dict()["model"]}
    atomic_save(payload, tmp_path / "best.pt")
    decoder = load_model_checkpoint(tmp_path / "best.pt").model.decoder
    assert [h.in_channels for h in decoder.heads] == [24, 12, 6]


def test_model_args_that_disagree_with_the_config_are_refused(tmp_path: Path) -> None:
    cfg = _cfg()
    payload = model_payload(create_model_from_config(cfg), cfg, 0.5, {})
    payload["model_args"]["train_encoder"] = True
    atomic_save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=r"edited\.pt: its model_args and its config's model section differ "
                                              r"in \['train_encoder'\]"):
        load_model_checkpoint(tmp_path / "edited.pt")


def test_create_model_takes_explicit_arguments() -> None:
    model = create_model(out_channels=3, encoder="mobilesam_tinyvit", weights="random",
                         adapter={"placement": "none"}, decoder_channels=(16, 8, 4))
    assert len(model.adapters) == 0 and model.saves_encoder
    assert tuple(model.predict_logits(torch.rand(1, 3, 64, 64)).shape) == (1, 3, 64, 64)
    with pytest.raises(TypeError):
        create_model(_cfg())  # a config goes through create_model_from_config
