"""Configuration: precedence, refusal of bad keys and values, shipped configs."""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Optional

import pytest
import torch

from s2unet.cli import main
from s2unet.config import Config, ConfigError, Interval, check_ranges, load_config, save_config
from s2unet.devices import resolve_device
from s2unet.models import check_model_config

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


# ------------------------------------------------------------------------------- value ranges
BAD_VALUES = [
    # (overrides, the message: key, allowed range, value)
    (["train.lr=-0.001"], "train.lr must be > 0, got -0.001"),
    (["train.lr=.nan"], "train.lr must be > 0, got nan"),
    (["train.weight_decay=-1"], "train.weight_decay must be >= 0, got -1.0"),
    (["train.epochs=0"], "train.epochs must be >= 1, got 0"),
    (["train.steps_per_epoch=-1"], "train.steps_per_epoch must be >= 0, got -1"),
    (["train.val_every=0"], "train.val_every must be >= 1, got 0"),
    (["train.val_max_cases=-1"], "train.val_max_cases must be >= 0"),
    (["train.warmup_steps=-5"], "train.warmup_steps must be >= 0, got -5"),
    (["train.grad_clip=-1"], "train.grad_clip must be >= 0"),
    (["train.threads=-2"], "train.threads must be >= 0, got -2"),
    (["train.batch_size=0"], "train.batch_size must be >= 1"),
    (["train.accumulate=0"], "train.accumulate must be >= 1"),
    (["train.feature_cache_mb=-1"], "train.feature_cache_mb must be >= 0"),
    (["train.device=gpu"], "train.device 'gpu' is not a device; use auto, cpu, cuda or cuda:N"),
    (["train.device=cuda:x"], "train.device 'cuda:x' is not a device"),
    (["data.split.val_ratio=1.0"], r"data.split.val_ratio must be in [0, 1), got 1.0"),
    (["data.split.val_ratio=-0.1"], r"data.split.val_ratio must be in [0, 1)"),
    (["data.split.test_ratio=1.5"], r"data.split.test_ratio must be in [0, 1), got 1.5"),
    (["data.split.val_ratio=0.6", "data.split.test_ratio=0.4"],
     "data.split.val_ratio + data.split.test_ratio must be < 1"),
    (["data.split.folds=1"], "data.split.folds must be >= 2"),
    (["data.split.fold=-1"], "data.split.fold must be >= 0"),
    (["model.adapter.dropout=1.0"], r"model.adapter.dropout must be in [0, 1), got 1.0"),
    (["model.attention_lora.dropout=-0.1"], r"model.attention_lora.dropout must be in [0, 1)"),
    (["model.adapter.rank=0"], "model.adapter.rank must be >= 1"),
    (["model.attention_lora.rank=0"], "model.attention_lora.rank must be >= 1"),
    (["model.adapter.alpha=-8"], "model.adapter.alpha must be > 0"),
    (["model.decoder_channels=[128, 0, 32]"], r"model.decoder_channels[1] must be >= 1, got 0"),
    (["loss.deep_supervision_weights=[-1, 0.5, 1]"], r"loss.deep_supervision_weights[0] must be >= 0"),
    (["loss.deep_supervision_weights=[0, 0, 0]"], "deep_supervision_weights are all 0"),
    (["data.num_workers=-1"], "data.num_workers must be >= 0, got -1"),
    (["data.mask_threshold=0"], "data.mask_threshold must be in (0, 1), got 0.0"),
    (["data.mask_threshold=1"], "data.mask_threshold must be in (0, 1), got 1.0"),
    (["data.image_size=0"], "data.image_size must be >= 1"),
    (["data.axis=3"], "data.axis must be in [0, 2], got 3"),
    (["data.cache_mb=-1"], "data.cache_mb must be >= 0"),
    (["data.num_classes=-1"], "data.num_classes must be >= 0"),
    (["data.lesion_oversample=1"], r"data.lesion_oversample must be in [0, 1)"),
    (["data.window.width=0"], "data.window.width must be > 0"),
    (["data.window.level=.inf"], "data.window.level must be a finite number, got inf"),
    (["data.augment.hflip=1.5"], "data.augment.hflip must be in [0, 1], got 1.5"),
    (["data.augment.affine_prob=-0.5"], "data.augment.affine_prob must be in [0, 1]"),
    (["data.augment.rotate_deg=-10"], "data.augment.rotate_deg must be in [0, 180]"),
    (["data.augment.scale=1"], r"data.augment.scale must be in [0, 1)"),
    (["data.augment.brightness=2"], r"data.augment.brightness must be in [0, 1)"),
    (["data.augment.noise_std=-0.1"], "data.augment.noise_std must be >= 0"),
    (["seed=-1"], "seed must be >= 0"),
    (["name=a/b"], "name 'a/b' must be a plain folder name"),
    (["data.labels=[]"], "data.labels must list at least one label folder"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_values_are_refused_naming_key_and_range(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _fields(cls: type, prefix: str = ""):
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _fields(tp, prefix + f.name + ".")
        else:
            yield prefix + f.name, tp, f


def test_every_numeric_key_has_an_allowed_range():
    numeric = {int, float, Optional[float], list[int], list[float]}
    missing = [key for key, tp, f in _fields(Config) if tp in numeric and "range" not in f.metadata]
    assert not missing, f"numeric config keys without a range: {missing}"


def test_defaults_and_ranges_agree():
    check_ranges(Config())
    assert 0.5 in Interval("(0, 1)") and 1 not in Interval("(0, 1)") and 1 in Interval("[0, 1]")
    assert float("nan") not in Interval("(-inf, inf)") and float("inf") not in Interval("[0, inf)")


# ------------------------------------------------------------------ YAML booleans for enum words
def test_enum_word_that_yaml_reads_as_boolean_is_accepted(tmp_path):
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    path = tmp_path / "c.yaml"
    path.write_text("train: {amp: off}\n")
    assert load_config(path).train.amp == "off"
    # "on" has no counterpart among the choices: refused, saying why it looks like true.
    with pytest.raises(ConfigError, match=r"train.amp: True is not one of .* \(YAML reads true/yes/on as true\)"):
        load_config(None, ["train.amp=on"])


# ----------------------------------------------------------------------- which layer is at fault
def test_errors_name_the_override_or_the_file_that_caused_them(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 4}\ndata: {split: {val_ratio: 0.6}}\n")
    cases = [
        (["train.epochs=0"], "--set 'train.epochs=0': train.epochs must be >= 1"),
        (["train.epochs=two"], "--set 'train.epochs=two': train.epochs: expected int"),
        (["train.epohcs=1"], "--set 'train.epohcs=1': unknown config key train.epohcs"),
        (["train.lr=0.1", "data.split.test_ratio=0.5"], "--set 'data.split.test_ratio=0.5': data.split.val_ratio + "),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError) as err:
            load_config(path, overrides)
        assert str(err.value).startswith(message), str(err.value)
    path.write_text("train: {epochs: 0}\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: train.epochs must be >= 1"):
        load_config(path, ["train.lr=0.1"])
    assert load_config(path, ["train.epochs=2"]).train.epochs == 2  # an override may fix the file


def test_override_with_broken_yaml_value_is_named():
    with pytest.raises(ConfigError, match=r"--set 'train.lr=\[': the value is not valid YAML"):
        load_config(None, ["train.lr=["])


# --------------------------------------------------------- model and device checks (pre-flight)
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.encoder=hiera_tiny"], "model.encoder: unknown encoder 'hiera_tiny'"),
        (["model.encoder=mobilesam_tinyvit", "data.image_size=100"],
         "data.image_size 100 is not a multiple of 16, the input stride of encoder mobilesam_tinyvit; use 96 or 112"),
        (["data.image_size=336"], "data.image_size 336 is not a multiple of 32, the input stride of encoder "
                                  "sam2.1_hiera_tiny; use 320 or 352"),
        (["model.encoder=litemedsam_tinyvit", "data.image_size=2"], "multiple of 4, the input stride of encoder "
                                                                    "litemedsam_tinyvit; use 4"),
        (["loss.name=dice_focal", "loss.gama=2"], "unknown config key loss.gama; did you mean loss.gamma?"),
        (["text.model=wordlama_l2_supercat"], "text.model: 'wordlama_l2_supercat' is not a registered text model "
                                              "(did you mean 'wordllama_l2_supercat'?); known: wordllama_l2_supercat"),
    ],
)
def test_check_only_refuses_unknown_encoder_and_image_size_off_the_stride(overrides, message, capsys):
    argv = ["--check-only", "--set", "model.weights=random"] + [a for o in overrides for a in ("--set", o)]
    assert main(argv, command="train") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_model_checks_need_no_model_and_skip_cnn_baselines():
    check_model_config(load_config(None, ["model.weights=random", "data.image_size=352"]))
    check_model_config(load_config(None, ["model.arch=unet", "model.encoder=none", "data.image_size=100"]))


def test_training_stops_at_the_model_check_before_any_work(tmp_path, monkeypatch):
    from s2unet.engine import trainer

    monkeypatch.setattr(trainer, "build_datasets", lambda *a: pytest.fail("data read before the model check"))
    cfg = load_config(None, ["model.weights=random", "data.image_size=100", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="data.image_size 100 is not a multiple of 32"):
        trainer.train(cfg)
    assert not list(tmp_path.iterdir())


def test_device_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu", "train.device") == torch.device("cpu")
    assert resolve_device("auto", "train.device") == torch.device("cpu")
    with pytest.raises(ConfigError, match="train.device 'cuda': this machine has no usable CUDA device"):
        resolve_device("cuda", "train.device")
    with pytest.raises(ConfigError, match="--device 'gpu' is not a device"):
        resolve_device("gpu", "--device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0", "train.device") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match=r"train.device 'cuda:1': this machine has 1 CUDA device\(s\), cuda:0..cuda:0"):
        resolve_device("cuda:1", "train.device")


def test_a_bare_config_name_is_found_among_the_shipped_configs(tmp_path, monkeypatch):
    # The mission's command as written: `train.py --config covid_ct.yaml` from any folder.
    monkeypatch.chdir(tmp_path)
    cfg = load_config("covid_ct.yaml")
    assert cfg.name == "covid_ct" and cfg.data.labels == ["masks_infection"]
    (tmp_path / "covid_ct.yaml").write_text("name: mine\n")
    assert load_config("covid_ct.yaml").name == "mine"  # a file in the working folder wins
    with pytest.raises(ConfigError, match=r"nope.yaml does not exist \(shipped configs in .*covid_ct.yaml"):
        load_config("nope.yaml")
