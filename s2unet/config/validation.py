"""Cross-field checks of a built config: what types and ranges alone cannot express."""
from __future__ import annotations

import re

from .architectures import PROMPTED_ENCODERS, arch_traits
from .ranges import ConfigError, check_ranges
from .schema import Config, DataConfig
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
    if d.rehearse_share != DataConfig.rehearse_share and not d.rehearse_from:
        raise ConfigError("data.rehearse_share is set but data.rehearse_from names no checkpoint to rehearse")
    if d.rehearse_from and cfg.text.enabled:
        raise ConfigError("data.rehearse_from: rehearsal is not available for text-prompted runs")
    keep = cfg.postprocess.keep_largest
    n_fg = cfg.out_channels - (1 if d.task == "multiclass" else 0)
    if len(keep) not in (0, 1, n_fg):
        raise ConfigError(f"postprocess.keep_largest: give one count for all channels or one per label "
                          f"({n_fg}); got {keep}")


def _validate_prompted(cfg: Config) -> None:
    """Cross-field checks of a prompted architecture (``prompted_sam``): what it trains and predicts."""
    m = cfg.model
    traits = arch_traits(m.arch)
    if not traits.takes_prompts:
        return
    if not traits.accepts_encoder(m.encoder):
        raise ConfigError(f"model.encoder {m.encoder!r}: {m.arch} fine-tunes {', '.join(PROMPTED_ENCODERS)}")
    if m.weights == "random":
        raise ConfigError("model.weights: prompted_sam fine-tunes a pretrained SAM checkpoint; 'random' has none")
    if m.adapter.placement != "none":
        raise ConfigError("model.adapter.placement: prompted_sam trains model.attention_lora and/or "
                          "model.prompted.decoder, not stage adapters; set it to none")
    if m.train_encoder:
        raise ConfigError("model.train_encoder: prompted_sam trains the encoder through model.attention_lora only")
    if not m.attention_lora.enabled and m.prompted.decoder == "none":
        raise ConfigError("model.prompted.decoder is none and model.attention_lora.enabled is false: nothing would be trained")
    if cfg.data.task == "multiclass":
        raise ConfigError("data.task: prompted_sam predicts one mask per prompted structure (binary or multilabel), "
                          "not multiclass")


def validate(cfg: Config) -> Config:
    """Check every value's range (see :func:`ranged`) and the cross-field rules types cannot express.

    Raises:
        ConfigError: naming the first key at fault and what it allows.
    """
    check_ranges(cfg)
    d, m = cfg.data, cfg.model
    arch_traits(m.arch)  # an unknown model.arch stops here, naming the registered ones
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
    _validate_prompted(cfg)
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
