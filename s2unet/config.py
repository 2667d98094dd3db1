"""Run configuration: typed dataclasses, YAML files and ``--set key.sub=value`` overrides.

Precedence is defaults < YAML < ``--set``. Every key is checked against the dataclasses before
anything heavy starts: an unknown key names the closest valid one, a wrong type names the key,
the expected type and the value found, a number outside the range declared beside its key
(:func:`ranged`) names the key and the range. Each error says which layer brought it in: the
YAML file or the ``--set`` override.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, TypeVar

import yaml


class ConfigError(ValueError):
    """A configuration key, value or file is wrong; the message names it."""


_BOUND = r"-?(?:inf|\d+(?:\.\d+)?)"
_INTERVAL = re.compile(rf"([\[(])({_BOUND}), ({_BOUND})([\])])")


@dataclass(frozen=True)
class Interval:
    """An allowed range of numbers in interval notation, e.g. ``[0, 1)``; never NaN or inf.

    Attributes:
        text: the notation, kept for messages.
    """

    text: str

    def __post_init__(self) -> None:
        self._parts()  # a malformed range fails where the field is declared

    def _parts(self) -> tuple[str, str, str, str]:
        match = _INTERVAL.fullmatch(self.text)
        if match is None:
            raise ValueError(f"not an interval such as '[0, 1)': {self.text!r}")
        opening, lo, hi, closing = match.groups()
        return opening, lo, hi, closing

    def __contains__(self, value: float) -> bool:
        opening, lo, hi, closing = self._parts()
        if not math.isfinite(value):
            return False
        above = value >= float(lo) if opening == "[" else value > float(lo)
        below = value <= float(hi) if closing == "]" else value < float(hi)
        return above and below

    def describe(self) -> str:
        """The range in words for an error message: ``> 0``, ``>= 1``, ``in [0, 1)``, ``a finite number``."""
        opening, lo, hi, _ = self._parts()
        if lo == "-inf" and hi == "inf":
            return "a finite number"
        if hi == "inf":
            return f"{'>=' if opening == '[' else '>'} {lo}"
        return f"in {self.text}"


def check_range(key: str, value: float, interval: str | Interval) -> None:
    """Refuse a number outside its allowed range (NaN and inf included).

    Args:
        key: the config key or command-line option the value came from, named in the message.
        value: the number.
        interval: the allowed range, e.g. ``"(0, 1)"`` or ``"[1, inf)"``.

    Raises:
        ConfigError: ``<key> must be <range>, got <value>``.
    """
    interval = Interval(interval) if isinstance(interval, str) else interval
    if value not in interval:
        raise ConfigError(f"{key} must be {interval.describe()}, got {value!r}")


def ranged(interval: str, default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value (each element, for a list) must lie in ``interval``.

    :func:`validate` checks every such field, so the range is written once, beside the key.
    """
    return field(default=default, default_factory=default_factory, metadata={"range": Interval(interval)})


def check_ranges(obj: Any, prefix: str = "") -> None:
    """Check every :func:`ranged` field of a (nested) config dataclass instance.

    Raises:
        ConfigError: naming the first key out of range, its allowed range and the value.
    """
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_ranges(value, key + ".")
        elif "range" in f.metadata and value is not None:
            items = enumerate(value) if isinstance(value, list) else [(None, value)]
            for i, item in items:
                check_range(key if i is None else f"{key}[{i}]", item, f.metadata["range"])


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
    level: Optional[float] = ranged("(-inf, inf)", None)
    width: Optional[float] = ranged("(0, inf)", None)


@dataclass
class SplitConfig:
    """How cases (patients) are split; never by slice.

    mode ``ratio`` draws a seeded split, ``kfold`` takes fold ``fold`` of ``folds`` as
    validation (the test list, if any, is held out first), ``list`` uses the lists as given.
    ``group`` is the cross-source split: ``groups`` maps every case to its source (hospital,
    scanner); the cases of ``train_groups`` are split into train and val by ``val_ratio``, and
    the cases of ``test_groups`` (default: every other group) are the test split, so the test
    score says how the model travels to a source it never saw.
    """

    mode: Literal["ratio", "kfold", "list", "group"] = "ratio"
    val_ratio: float = ranged("[0, 1)", 0.2)  # of all cases
    test_ratio: float = ranged("[0, 1)", 0.0)
    folds: int = ranged("[2, inf)", 5)
    fold: int = ranged("[0, inf)", 0)
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    # group mode: a JSON ({case: group} or [{"case", "group"}, ...]) or CSV (columns case,
    # group) file, relative to data.root
    groups: str = ""
    train_groups: list[str] = field(default_factory=list)
    test_groups: list[str] = field(default_factory=list)


@dataclass
class AugmentConfig:
    """Augmentation suited to radiographs and CT slices (applied to training data only)."""

    enabled: bool = True
    # Probabilities and sizes; 0 switches a step off. scale, brightness and contrast are
    # relative changes 1 +- x: at 1 or more an image could shrink to nothing or flip its sign.
    hflip: float = ranged("[0, 1]", 0.0)  # off by default: left/right anatomy is not symmetric in X-rays
    vflip: float = ranged("[0, 1]", 0.0)
    rotate_deg: float = ranged("[0, 180]", 10.0)
    scale: float = ranged("[0, 1)", 0.1)
    translate: float = ranged("[0, 1]", 0.05)  # of the image side
    affine_prob: float = ranged("[0, 1]", 0.5)
    brightness: float = ranged("[0, 1)", 0.1)
    contrast: float = ranged("[0, 1)", 0.1)
    gamma: float = ranged("[0, inf)", 0.0)
    noise_std: float = ranged("[0, inf)", 0.0)
    intensity_prob: float = ranged("[0, 1]", 0.5)
    # Robustness to other sources (each off by default; see s2unet.data.transforms).
    blur_sigma: float = ranged("[0, inf)", 0.0)  # largest Gaussian blur sigma, pixels
    clahe: float = ranged("[0, 1]", 0.0)  # probability of CLAHE local contrast equalisation (kornia)
    window_jitter: float = ranged("[0, 1)", 0.0)  # HU volumes: window level and width moved by up to this x width
    crop_min: float = ranged("(0, 1]", 1.0)  # random resized crop: smallest side fraction kept (1 = off)
    zoom_out: float = ranged("[0, inf)", 0.0)  # shrink by up to 1 / (1 + zoom_out) inside a zero border
    rot90: float = ranged("[0, 1]", 0.0)  # probability of a random 90/180/270 degree rotation (unknown orientation)


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
    num_classes: int = ranged("[0, inf)", 0)  # multiclass only: label values 0..num_classes-1 (0 = background)
    # Of the mask's value range, for 0/255 and anti-aliased masks; 0 or 1 would make every
    # pixel (or none) foreground.
    mask_threshold: float = ranged("(0, 1)", 0.5)
    image_size: int = ranged("[1, inf)", 352)  # s2unet: a multiple of the encoder's stride (checked with the model)
    # volumes
    axis: int = ranged("[0, 2]", 2)
    window: WindowConfig = field(default_factory=WindowConfig)
    context_slices: bool = False  # 2.5D: neighbouring slices as the three channels
    # After windowing, every slice/image (training and inference): "percentile" stretches its
    # 1st-99th percentiles to 0..1, "clahe" equalises local contrast (kornia CLAHE), so 8-bit,
    # CLAHE-processed and HU inputs reach the model on a comparable scale.
    normalize: Literal["none", "percentile", "clahe"] = "none"
    max_train_slices: int = ranged("[0, inf)", 0)  # few-label training: keep N training slices (seeded), 0 = all
    lesion_oversample: float = ranged("[0, 1)", 0.0)  # share of training draws taken from slices with a lesion
    cache_mb: int = ranged("[0, inf)", 2048)
    reorient: bool = True  # slice in the closest canonical (RAS) orientation
    # both
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = ranged("[0, inf)", 2)


# ---------------------------------------------------------------------------------------- model
@dataclass
class AdapterConfig:
    """Low-rank adapters ahead of the encoder's stages (or blocks)."""

    placement: Literal["stage", "block", "none"] = "stage"
    rank: int = ranged("[1, inf)", 8)
    alpha: float = ranged("(0, inf)", 8.0)
    dropout: float = ranged("[0, 1)", 0.0)


@dataclass
class AttentionLoraConfig:
    """Optional LoRA on the attention projections of every block, through peft."""

    enabled: bool = False
    rank: int = ranged("[1, inf)", 4)
    alpha: float = ranged("(0, inf)", 4.0)
    dropout: float = ranged("[0, 1)", 0.0)


@dataclass
class ModelConfig:
    """Architecture: s2unet (encoder, adapters, decoder) or a CNN baseline trained the same way."""

    arch: Literal["s2unet", "unet", "deeplabv3plus"] = "s2unet"
    cnn_pretrained: bool = False  # CNN baselines: ImageNet encoder weights (needs them on disk)
    encoder: str = "sam2.1_hiera_tiny"
    weights: str = "default"  # "default" (official checkpoint), "random" or a file path
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    attention_lora: AttentionLoraConfig = field(default_factory=AttentionLoraConfig)
    decoder_channels: list[int] = ranged("[1, inf)", default_factory=lambda: [128, 64, 32])
    train_encoder: bool = False  # full fine-tuning of the trunk; off by design


# ----------------------------------------------------------------------------------------- loss
@dataclass
class LossConfig:
    """Loss on every deep-supervision output, weighted from the deepest head to the last."""

    name: Literal["structure", "dice_ce", "dice_focal"] = "structure"
    deep_supervision_weights: list[float] = ranged("[0, inf)", default_factory=lambda: [0.25, 0.5, 1.0])


# ---------------------------------------------------------------------------------- postprocess
@dataclass
class PostprocessConfig:
    """Cleaning of the binary prediction, applied by validation and ``infer.py`` (the
    checkpoint stores it; ``infer.py --no-postprocess`` skips it).

    ``keep_largest``: keep the N largest connected components of each channel (3D components
    in volumes); one number for every channel or one per channel, e.g. ``[2]`` for a lungs
    label (two lungs); empty keeps everything. ``fill_holes``: fill holes enclosed by the
    foreground (per slice in volumes).
    """

    keep_largest: list[int] = ranged("[1, inf)", default_factory=list)
    fill_holes: bool = False


# ---------------------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    """Optimisation, validation and checkpointing."""

    epochs: int = ranged("[1, inf)", 20)
    steps_per_epoch: int = ranged("[0, inf)", 0)  # 0 = one pass over the training slices
    batch_size: int = ranged("[1, inf)", 8)
    lr: float = ranged("(0, inf)", 1e-3)
    weight_decay: float = ranged("[0, inf)", 1e-4)
    warmup_steps: int = ranged("[0, inf)", 50)
    accumulate: int = ranged("[1, inf)", 1)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    grad_clip: float = ranged("[0, inf)", 1.0)  # 0 = no clipping
    val_every: int = ranged("[1, inf)", 1)  # epochs
    val_max_cases: int = ranged("[0, inf)", 0)  # 0 = all validation cases
    metric: Literal["dice", "iou"] = "dice"
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    threads: int = ranged("[0, inf)", 0)  # 0 = torch default
    compile: bool = False  # torch.compile the training model (measured: no gain on CPU)
    # Decoder-only runs (adapter placement none, no attention LoRA) without augmentation see
    # the same encoder features every epoch: compute them once and keep them (fp16).
    cache_features: bool = True
    feature_cache_mb: int = ranged("[0, inf)", 4096)  # in memory; beyond this, features spill to the run dir


@dataclass
class Config:
    """A whole run."""

    name: str = "run"
    seed: int = ranged("[0, inf)", 0)  # numpy's generators refuse negative seeds
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

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


# YAML 1.1 (PyYAML) reads these words as booleans, so ``amp: off`` arrives as False.
_YAML_BOOL_WORDS = {True: ("true", "yes", "on"), False: ("false", "no", "off")}


def _literal_word(value: bool, args: tuple[Any, ...]) -> Any:
    """The one choice of a Literal that YAML turned into ``value`` (``off`` -> False), else ``value``."""
    words = [a for a in args if isinstance(a, str) and a.lower() in _YAML_BOOL_WORDS[value]]
    return words[0] if len(words) == 1 else value


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float etc.)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if isinstance(value, bool):
            value = _literal_word(value, args)
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if isinstance(value, bool):
                hint = f" (YAML reads {'/'.join(_YAML_BOOL_WORDS[value])} as {str(value).lower()})"
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
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc.__class__.__name__})") from None
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


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
    return cfg


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict."""
    return validate(_build(Config, values))


def read_values(path: str | Path | None) -> dict[str, Any]:
    """The raw nested values of a YAML file (or none).

    Raises:
        ConfigError: a missing or unreadable file, a non-mapping document.
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
    return values


def build_checked(cls: type, values: dict[str, Any], source: str | Path | None = None) -> Any:
    """Build the dataclass ``cls`` from nested values, checking every key and type.

    Args:
        cls: a (nested) config dataclass.
        values: from :func:`read_values`.
        source: where the values came from (a file, an override), prefixed to error messages.
    """
    try:
        return _build(cls, values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source is not None else str(exc)) from None


_Checked = TypeVar("_Checked")


def _fails_with(check: Callable[[_Checked], _Checked], built: _Checked, message: str) -> bool:
    try:
        check(built)
    except ConfigError as exc:
        return str(exc) == message
    return False


def load_layered(
    cls: type[_Checked],
    values: dict[str, Any],
    source: str | Path | None,
    overrides: list[str] | None,
    check: Callable[[_Checked], _Checked],
) -> _Checked:
    """Build ``cls`` from a file's values and ``--set`` overrides, blaming the right one for an error.

    Args:
        cls: a (nested) config dataclass.
        values: the file's values, from :func:`read_values`.
        source: the file (None for defaults only).
        overrides: ``key.sub=value`` strings, applied in order.
        check: the cross-field validation of a built ``cls``.

    Returns:
        The checked instance.

    Raises:
        ConfigError: prefixed with the layer that brought the error in: the file's path, or
            ``--set 'key=value'`` for the first override after which it appears.
    """
    layers = [(None if source is None else str(source), build_checked(cls, values, source))]
    for item in overrides or []:
        label = f"--set {item!r}"
        values = _merge(values, parse_override(item))
        layers.append((label, build_checked(cls, values, label)))
    try:
        return check(layers[-1][1])
    except ConfigError as exc:
        message = str(exc)
    culprit = next(label for label, built in layers if _fails_with(check, built, message))
    raise ConfigError(message if culprit is None else f"{culprit}: {message}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``--set`` overrides.

    Args:
        path: a YAML file, or None for the defaults.
        overrides: ``key.sub=value`` strings.

    Returns:
        The validated Config. Relative ``data.root`` in a YAML file is kept as written
        (resolved against the working directory, as the README's commands assume).
    """
    return load_layered(Config, read_values(path), path, overrides, validate)


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tmp.replace(path)
