"""Run configuration: typed dataclasses, YAML files and ``--set key.sub=value`` overrides.

Precedence is defaults < YAML < ``--set``. Every key is checked against the dataclasses before
anything heavy starts: an unknown key names the closest valid one, a wrong type names the key,
the expected type and the value found.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A configuration key, value or file is wrong; the message names it."""


# ----------------------------------------------------------------------------------------- data
@dataclass
class WindowConfig:
    """CT intensity window in Hounsfield units; ``preset`` fills level/width.

    ``preset: none`` leaves the data alone and scales its dtype range (8-bit data) or its
    min/max to 0..1. ``auto`` does the same for 8/16-bit data but applies the lung window to
    volumes whose values reach below -500 (Hounsfield units), so a model trained on 8-bit
    slices sees lung-windowed input when given CT in HU from another hospital.
    """

    preset: Literal["auto", "none", "lung", "mediastinum", "soft_tissue", "bone", "custom"] = "auto"
    level: Optional[float] = None
    width: Optional[float] = None


@dataclass
class SplitConfig:
    """How cases (patients) are split; never by slice.

    mode ``ratio`` draws a seeded split, ``kfold`` takes fold ``fold`` of ``folds`` as
    validation (the test list, if any, is held out first), ``list`` uses the lists as given.
    """

    mode: Literal["ratio", "kfold", "list"] = "ratio"
    val_ratio: float = 0.2
    test_ratio: float = 0.0
    folds: int = 5
    fold: int = 0
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)


@dataclass
class AugmentConfig:
    """Augmentation suited to radiographs and CT slices (applied to training data only)."""

    enabled: bool = True
    hflip: float = 0.0  # off by default: left/right anatomy is not symmetric in X-rays
    vflip: float = 0.0
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    affine_prob: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.0
    noise_std: float = 0.0
    intensity_prob: float = 0.5


@dataclass
class DataConfig:
    """Where the images and labels are and how they become model inputs.

    ``kind: image`` pairs files in ``images`` with files of the same stem in each folder of
    ``labels`` (one folder per label for multi-label tasks). ``kind: volume`` pairs NIfTI
    volumes in ``images`` with label volumes of the same name in ``labels[0]`` and cuts them
    into slices along ``axis``. Relative paths are resolved against ``root``.
    """

    kind: Literal["image", "volume"] = "image"
    root: str = "."
    images: str = "images"
    labels: list[str] = field(default_factory=lambda: ["masks"])
    label_names: list[str] = field(default_factory=list)
    task: Literal["binary", "multilabel", "multiclass"] = "binary"
    num_classes: int = 0  # multiclass only: label values 0..num_classes-1 (0 = background)
    mask_threshold: float = 0.5  # of the mask's value range, for 0/255 and anti-aliased masks
    image_size: int = 352
    # volumes
    axis: int = 2
    window: WindowConfig = field(default_factory=WindowConfig)
    context_slices: bool = False  # 2.5D: neighbouring slices as the three channels
    lesion_oversample: float = 0.0  # share of training draws taken from slices with a lesion
    cache_mb: int = 2048
    reorient: bool = True  # slice in the closest canonical (RAS) orientation
    # both
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 2


# ---------------------------------------------------------------------------------------- model
@dataclass
class AdapterConfig:
    """Low-rank adapters ahead of the encoder's stages (or blocks)."""

    placement: Literal["stage", "block", "none"] = "stage"
    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0


@dataclass
class AttentionLoraConfig:
    """Optional LoRA on the attention projections of every block, through peft."""

    enabled: bool = False
    rank: int = 4
    alpha: float = 4.0
    dropout: float = 0.0


@dataclass
class ModelConfig:
    """Architecture: s2unet (encoder, adapters, decoder) or a CNN baseline trained the same way."""

    arch: Literal["s2unet", "unet", "deeplabv3plus"] = "s2unet"
    cnn_pretrained: bool = False  # CNN baselines: ImageNet encoder weights (needs them on disk)
    encoder: str = "sam2.1_hiera_tiny"
    weights: str = "default"  # "default" (official checkpoint), "random" or a file path
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    attention_lora: AttentionLoraConfig = field(default_factory=AttentionLoraConfig)
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32])
    train_encoder: bool = False  # full fine-tuning of the trunk; off by design


# ----------------------------------------------------------------------------------------- loss
@dataclass
class LossConfig:
    """Loss on every deep-supervision output, weighted from the deepest head to the last."""

    name: Literal["structure", "dice_ce", "dice_focal"] = "structure"
    deep_supervision_weights: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])


# ---------------------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    """Optimisation, validation and checkpointing."""

    epochs: int = 20
    steps_per_epoch: int = 0  # 0 = one pass over the training slices
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    accumulate: int = 1
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    grad_clip: float = 1.0
    val_every: int = 1  # epochs
    val_max_cases: int = 0  # 0 = all validation cases
    metric: Literal["dice", "iou"] = "dice"
    device: str = "auto"
    threads: int = 0  # 0 = torch default
    compile: bool = False  # torch.compile the training model (measured: no gain on CPU)
    # Decoder-only runs (adapter placement none, no attention LoRA) without augmentation see
    # the same encoder features every epoch: compute them once and keep them (fp16).
    cache_features: bool = True
    feature_cache_mb: int = 4096  # in memory; beyond this, features spill to the run dir


@dataclass
class Config:
    """A whole run."""

    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def out_channels(self) -> int:
        """Channels of the prediction: one per label, or one per class for ``multiclass``."""
        if self.data.task == "multiclass":
            return self.data.num_classes
        return max(1, len(self.data.label_names) or len(self.data.labels))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "soft_tissue": (50.0, 350.0),
    "bone": (400.0, 1800.0),
}


# ------------------------------------------------------------------------------ build / validate
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float etc.)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}{hint}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, key + ".")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    if tp in (int, float, str) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``a.b.c=value`` into ``{"a": {"b": {"c": value}}}``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def validate(cfg: Config) -> Config:
    """Cross-field checks that single types cannot express."""
    d, m = cfg.data, cfg.model
    if d.task == "multiclass" and d.num_classes < 2:
        raise ConfigError("data.num_classes: a multiclass task needs num_classes >= 2")
    if d.task != "multiclass" and d.label_names and len(d.label_names) != len(d.labels):
        raise ConfigError(
            f"data.label_names has {len(d.label_names)} names for {len(d.labels)} data.labels folders"
        )
    if d.task == "binary" and len(d.labels) != 1:
        raise ConfigError(f"data.task is binary but data.labels lists {len(d.labels)} folders; use multilabel")
    if d.window.preset == "custom" and (d.window.level is None or d.window.width is None):
        raise ConfigError("data.window: preset 'custom' needs level and width")
    if d.window.width is not None and d.window.width <= 0:
        raise ConfigError("data.window.width must be > 0")
    if d.image_size <= 0:
        raise ConfigError("data.image_size must be > 0")
    if not 0.0 <= d.lesion_oversample < 1.0:
        raise ConfigError("data.lesion_oversample must be in [0, 1)")
    if d.split.mode == "kfold" and not 0 <= d.split.fold < d.split.folds:
        raise ConfigError(f"data.split.fold {d.split.fold} is outside 0..{d.split.folds - 1}")
    if len(m.decoder_channels) != 3:
        raise ConfigError("model.decoder_channels: the decoder has three blocks, give three widths")
    if len(cfg.loss.deep_supervision_weights) != 3:
        raise ConfigError("loss.deep_supervision_weights: give one weight per decoder block (three)")
    if m.adapter.rank <= 0 or m.attention_lora.rank <= 0:
        raise ConfigError("model.adapter.rank and model.attention_lora.rank must be > 0")
    if cfg.train.batch_size <= 0 or cfg.train.accumulate <= 0:
        raise ConfigError("train.batch_size and train.accumulate must be > 0")
    return cfg


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict."""
    return validate(_build(Config, values))


def read_values(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The raw nested values of a YAML file (or none) with ``key=value`` overrides applied.

    Raises:
        ConfigError: a missing or unreadable file, a non-mapping document, a bad override.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        values = loaded
    for item in overrides or []:
        values = _merge(values, parse_override(item))
    return values


def build_checked(cls: type, values: dict[str, Any], source: str | Path | None = None) -> Any:
    """Build the dataclass ``cls`` from nested values, checking every key and type.

    Args:
        cls: a (nested) config dataclass.
        values: from :func:`read_values`.
        source: the file the values came from, prefixed to error messages.
    """
    try:
        return _build(cls, values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source is not None else str(exc)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``--set`` overrides.

    Args:
        path: a YAML file, or None for the defaults.
        overrides: ``key.sub=value`` strings.

    Returns:
        The validated Config. Relative ``data.root`` in a YAML file is kept as written
        (resolved against the working directory, as the README's commands assume).
    """
    cfg = build_checked(Config, read_values(path, overrides), path)
    try:
        return validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tmp.replace(path)
