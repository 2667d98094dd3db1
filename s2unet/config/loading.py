"""Building configs from YAML files and ``--set key.sub=value`` overrides, checking every key.

Precedence is defaults < YAML < ``--set``. An unknown key names the closest valid one, a wrong
type names the key, the expected type and the value found, and each error says which layer
brought it in: the YAML file or the ``--set`` override.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, TypeVar

import yaml

from ..io.atomic import atomic_path
from ..io.names import did_you_mean
from .ranges import ConfigError, check_ranges, extra_field
from .schema import Config
from .validation import validate


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# The configs shipped as package data (s2unet/configs, also the checkout's top-level configs/); an
# installed s2unet is a folder on disk, so the resource is a Path.
_SHIPPED_CONFIGS = Path(str(importlib.resources.files("s2unet") / "configs"))
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
            close = did_you_mean(str(value), [str(a) for a in args])
            hint = f" (did you mean {close!r}?)" if close else ""
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
    extra = extra_field(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != extra]
    for key in values:
        if key not in names and extra is None:
            close = did_you_mean(key, names)
            hint = f"; did you mean {prefix}{close}?" if close else ""
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    kwargs: dict[str, Any] = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items() if k in names}
    if extra is not None:  # checked by the layer that owns the section's choice (see extra_keys)
        kwargs[extra] = {k: v for k, v in values.items() if k not in names}
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


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict."""
    return validate(_build(Config, values))


def resolve_config_path(path: str | Path) -> Path:
    """The YAML file ``path`` names: as given, else a bare name found among the shipped configs.

    ``train.py --config covid_ct.yaml`` then works from any folder, as the model zoos' configs do.

    Raises:
        ConfigError: neither exists; the message lists the shipped configs.
    """
    given = Path(path)
    if given.is_file():
        return given
    shipped = _SHIPPED_CONFIGS / given.name
    if given.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.name for p in _SHIPPED_CONFIGS.glob("*.yaml")))
    raise ConfigError(f"config file {path} does not exist (shipped configs in {_SHIPPED_CONFIGS}: {names})")


def read_values(path: str | Path | None) -> dict[str, Any]:
    """The raw nested values of a YAML file (or none).

    Raises:
        ConfigError: a missing or unreadable file, a non-mapping document.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        values = loaded
    return values


def build_checked(cls: type, values: dict[str, Any], source: str | Path | None = None, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from nested values, checking every key and type.

    Args:
        cls: a (nested) config dataclass.
        values: from :func:`read_values`.
        source: where the values came from (a file, an override), prefixed to error messages.
        prefix: the section ``cls`` is, named before each key in messages (``"loss."``).

    Returns:
        The instance (ranges not yet checked: see :func:`~s2unet.config.ranges.check_ranges`).
    """
    try:
        return _build(cls, values, prefix)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source is not None else str(exc)) from None


def check_registered(name: str, names: Iterable[str], key: str, what: str) -> None:
    """Refuse a name that a registry (losses, prompt strategies, predictors...) does not hold.

    Args:
        name: the name given.
        names: the registered names.
        key: the config key it came from, named in the message.
        what: what the registry holds, e.g. ``"loss"``.

    Raises:
        ConfigError: ``<key>: '<name>' is not a registered <what> (did you mean ...?); known: ...``.
    """
    names = list(names)
    if name not in names:
        close = did_you_mean(str(name), names)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ConfigError(f"{key}: {name!r} is not a registered {what}{hint}; known: {', '.join(names)}")


def build_params(cls: type, values: dict[str, Any], prefix: str, owner: str) -> Any:
    """The own keys of a registry entry (a loss, a prompt strategy), checked like every config key.

    Args:
        cls: the entry's parameters dataclass (numbers declared with :func:`ranged`).
        values: the keys given for it (an :func:`extra_keys` dict).
        prefix: the section, named before each key in messages (``"loss."``).
        owner: the entry, named after an unknown-key message (``"loss dice_focal"``).

    Returns:
        The instance, ranges checked.

    Raises:
        ConfigError: an unknown key (with the closest valid one), a wrong type or a value out
            of range, naming the key.
    """
    try:
        params = build_checked(cls, values, prefix=prefix)
    except ConfigError as exc:
        raise ConfigError(f"{exc} ({owner})") from None
    check_ranges(params, prefix)
    return params


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
    values = read_values(path)
    return load_layered(Config, _merge(values, nnunet_values(values, overrides)), path, overrides, validate)


def nnunet_values(values: dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """The data keys an nnU-Net v2 dataset fixes, when ``data.images`` is its ``imagesTr``.

    Its ``dataset.json`` (in ``data.root``) names the labels: one foreground label trains a
    binary model named after it, more a multiclass one (``num_classes`` and the names in value
    order, the background first); ``labelsTr`` holds the label maps and ``file_ending`` tells
    pictures from volumes. These replace a YAML file's keys; ``--set`` still wins.

    Args:
        values: the YAML file's values.
        overrides: the ``--set`` strings (they may set ``data.root`` / ``data.images``).

    Returns:
        Nested values to merge over the file's (empty for other datasets).

    Raises:
        ConfigError: ``dataset.json`` is missing, unreadable, or has no foreground label.
    """
    from ..io.errors import DataError
    from ..io.nnunet import read_dataset_json
    from ..io.pictures import IMAGE_SUFFIXES

    probe = values
    for item in overrides or []:
        probe = _merge(probe, parse_override(item))
    data = probe.get("data") or {}
    if data.get("images") != "imagesTr":
        return {}
    path = Path(str(data.get("root", "."))).expanduser() / "dataset.json"
    if not path.is_file():
        raise ConfigError(f"data.images imagesTr is an nnU-Net v2 layout, but its dataset.json ({path}) does not exist")
    try:
        dataset = read_dataset_json(path)
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    if len(dataset.labels) < 2:
        raise ConfigError(f"{path}: labels name only the background {dataset.labels}")
    names = dataset.labels[1:]
    task: dict[str, Any] = ({"task": "binary", "label_names": names} if len(names) == 1 else
                            {"task": "multiclass", "num_classes": len(dataset.labels), "label_names": dataset.labels})
    kind = "image" if dataset.file_ending.lower() in IMAGE_SUFFIXES else "volume"
    return {"data": {"kind": kind, "labels": ["labelsTr"], **task}}


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
