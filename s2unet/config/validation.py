"""Cross-field checks of a built config: what types and ranges alone cannot express."""
from __future__ import annotations

import re

from .ranges import ConfigError, check_ranges
from .schema import Config
from .text import validate_text


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str, key: str) -> None:
    """Refuse a device string other than ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Whether the device exists is a property of the machine, not of the config: the engine
    checks it when it resolves the device.

    Args:
        name: the device string.
        key: the config key or option it came from, named in the message.

    Raises:
        ConfigError: naming the key and the accepted forms.
    """
    if not _DEVICE.fullmatch(name):
        raise ConfigError(f"{key} {name!r} is not a device; use auto, cpu, cuda or cuda:N")


def _validate_robustness(cfg: Config) -> None:
    """Cross-field checks of the cross-source split and the post-processing."""
    d, sp = cfg.data, cfg.data.split
    if sp.mode == "group":
        if not sp.groups:
            raise ConfigError("data.split.groups: mode 'group' needs a JSON/CSV file mapping case -> group")
        if not sp.train_groups:
            raise ConfigError("data.split.train_groups: mode 'group' needs at least one training group")
        both = sorted(set(sp.train_groups) & set(sp.test_groups))
        if both:
            raise ConfigError(f"data.split: groups {both} are in both train_groups and test_groups")
    keep = cfg.postprocess.keep_largest
    n_fg = cfg.out_channels - (1 if d.task == "multiclass" else 0)
    if len(keep) not in (0, 1, n_fg):
        raise ConfigError(f"postprocess.keep_largest: give one count for all channels or one per label "
                          f"({n_fg}); got {keep}")


def validate(cfg: Config) -> Config:
    """Check every value's range (see :func:`ranged`) and the cross-field rules types cannot express.

    Raises:
        ConfigError: naming the first key at fault and what it allows.
    """
    check_ranges(cfg)
    d, m = cfg.data, cfg.model
    if not cfg.name or "/" in cfg.name or cfg.name in (".", ".."):
        raise ConfigError(f"name {cfg.name!r} must be a plain folder name (it names the run directory)")
    if d.task == "multiclass" and d.num_classes < 2:
        raise ConfigError("data.num_classes: a multiclass task needs num_classes >= 2")
    if not d.labels:
        raise ConfigError("data.labels must list at least one label folder")
    if d.task != "multiclass" and d.label_names and len(d.label_names) != len(d.labels):
        raise ConfigError(
            f"data.label_names has {len(d.label_names)} names for {len(d.labels)} data.labels folders"
        )
    if d.task == "binary" and len(d.labels) != 1:
        raise ConfigError(f"data.task is binary but data.labels lists {len(d.labels)} folders; use multilabel")
    if d.window.preset == "custom" and (d.window.level is None or d.window.width is None):
        raise ConfigError("data.window: preset 'custom' needs level and width")
    if d.split.mode == "ratio" and d.split.val_ratio + d.split.test_ratio >= 1:
        raise ConfigError(
            f"data.split.val_ratio + data.split.test_ratio must be < 1 to leave training cases, "
            f"got {d.split.val_ratio} + {d.split.test_ratio}"
        )
    _validate_robustness(cfg)
    if d.split.mode == "kfold" and not d.split.fold < d.split.folds:
        raise ConfigError(f"data.split.fold {d.split.fold} is outside 0..{d.split.folds - 1}")
    if len(m.decoder_channels) != 3:
        raise ConfigError("model.decoder_channels: the decoder has three blocks, give three widths")
    if len(cfg.loss.deep_supervision_weights) != 3:
        raise ConfigError("loss.deep_supervision_weights: give one weight per decoder block (three)")
    if not any(cfg.loss.deep_supervision_weights):
        raise ConfigError("loss.deep_supervision_weights are all 0: nothing would be trained")
    check_device_name(cfg.train.device, "train.device")
    if cfg.text.enabled:
        validate_text(cfg)
    return cfg
