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


def _edited(tmp_path: Path, name: str, edit) -> Path:
    """A valid checkpoint of a tiny model, changed by ``edit(payload)`` and saved as ``name``."""
    cfg = _cfg()
    payload = model_payload(create_model_from_config(cfg), cfg, 0.5, {})
    edit(payload)
    atomic_save(payload, tmp_path / name)
    return tmp_path / name


def _poison(payload: dict) -> None:
    key = next(k for k, t in payload["state_dict"].items() if t.is_floating_point())
    payload["state_dict"][key] = torch.full_like(payload["state_dict"][key], float("inf"))
    payload["poisoned"] = key


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(threshold=float("nan")), r"its stored threshold is nan, not a number in \(0, 1\)"),
    (lambda p: p.update(threshold=1.5), r"its stored threshold is 1\.5, not a number in \(0, 1\)"),
    (_poison, r"state_dict tensor\(s\) \S+ hold NaN or inf values"),
    (lambda p: p.pop("config"), r"has no 'config' entry"),
    (lambda p: p.pop("model_args"), r"has no 'model_args' entry"),
    (lambda p: p.pop("state_dict"), r"has no 'state_dict' entry"),
    (lambda p: p["config"]["data"].update(image_size=65),
     r"its config is not usable: data\.image_size 65 is not a multiple of 16.*use 64 or 80"),
], ids=["nan_threshold", "threshold_out_of_range", "inf_weights", "no_config", "no_model_args", "no_state_dict",
        "image_size_65"])
def test_a_damaged_or_edited_checkpoint_is_refused_at_load_naming_file_and_key(tmp_path: Path, edit, message) -> None:
    path = _edited(tmp_path, "bad.pt", edit)
    with pytest.raises(CheckpointError, match=message) as err:
        load_model_checkpoint(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    poisoned = torch.load(path, weights_only=True).get("poisoned")
    if poisoned:
        assert poisoned in str(err.value)


def test_a_full_disk_while_saving_a_checkpoint_is_an_oserror_naming_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up part-way through the write (not at the rename): torch's own writer would
    turn that into ``RuntimeError ... unexpected pos``."""
    import errno
    import io

    real_open = Path.open

    class FullDisk(io.RawIOBase):  # takes 1 kB, then the device is full
        def __init__(self) -> None:
            self.written = 0

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            self.written += len(b)
            if self.written > 1024:
                raise OSError(errno.ENOSPC, "No space left on device")
            return len(b)

    def open_(self, mode="r", *args, **kwargs):
        return io.BufferedWriter(FullDisk()) if "w" in mode and self.name.endswith("best.pt") else \
            real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    cfg = _cfg()
    with pytest.raises(OSError) as err:
        atomic_save(model_payload(create_model_from_config(cfg), cfg, 0.5, {}), tmp_path / "best.pt")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "best.pt")
    assert list(tmp_path.iterdir()) == []  # no temporary left
