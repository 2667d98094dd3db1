"""Configuration: precedence, refusal of bad keys and values, shipped configs."""
from __future__ import annotations

from pathlib import Path

import pytest

from s2unet.cli import main
from s2unet.config import ConfigError, load_config, save_config

REPO = Path(__file__).resolve().parents[1]


def test_yaml_overrides_defaults_and_set_overrides_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 7, lr: 0.01}\ndata: {image_size: 256}\n")
    cfg = load_config(path, ["train.epochs=3", "model.adapter.rank=4"])
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01 and cfg.data.image_size == 256
    assert cfg.model.adapter.rank == 4 and cfg.train.batch_size == 8  # untouched default


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.imge_size=256", "unknown config key data.imge_size; did you mean data.image_size?"),
        ("trian.epochs=2", "unknown config key trian; did you mean train?"),
        ("train.epochs=two", "train.epochs: expected int, got 'two'"),
        ("train.amp=fp8", "train.amp: 'fp8' is not one of"),
        ("model.adapter.placement=stages", "did you mean 'stage'?"),
        ("data.augment.enabled=3", "data.augment.enabled: expected true/false"),
        ("model.decoder_channels=[1, 2]", "three widths"),
        ("data.split.fold=7", "data.split.fold 7 is outside 0..4"),
        ("train.epochs", "expected key.sub=value"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("[", r"\[")):
        load_config(None, ["data.split.mode=kfold", override] if "fold" in override else [override])


def test_bad_yaml_file_is_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data: {image_size: 256\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_task_and_labels_must_agree():
    with pytest.raises(ConfigError, match="binary but data.labels lists 2 folders"):
        load_config(None, ["data.labels=[a, b]"])
    cfg = load_config(None, ["data.task=multilabel", "data.labels=[a, b]", "data.label_names=[x, y]"])
    assert cfg.out_channels == 2


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(REPO / "configs" / "cxr_anatomy.yaml", ["train.epochs=2"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("name", ["covid_ct", "cxr_lung", "cxr_anatomy"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.name == name and cfg.model.adapter.placement == "stage"


def test_cli_reports_a_config_error_in_one_line(capsys):
    code = main(["--config", str(REPO / "configs" / "covid_ct.yaml"), "--set", "train.epohcs=1"], command="train")
    assert code == 2
    assert "unknown config key train.epohcs; did you mean train.epochs?" in capsys.readouterr().err
