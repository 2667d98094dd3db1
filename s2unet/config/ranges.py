"""Config errors and the allowed ranges of numbers, declared beside each key with :func:`ranged`."""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any


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


def extra_keys() -> Any:
    """A ``dict`` field that collects the keys of a section its dataclass does not declare.

    Used where a section's keys depend on a choice made in it (``loss: {name: ..., <the named
    loss's own keys>}``): the layer that owns the choice checks them (names, types, ranges),
    and :func:`~s2unet.config.loading.as_values` writes them back flat beside the declared keys.
    """
    return field(default_factory=dict, metadata={"extra": True})


def extra_field(cls: type) -> str | None:
    """The name of ``cls``'s :func:`extra_keys` field, if it has one."""
    return next((f.name for f in dataclasses.fields(cls) if f.metadata.get("extra")), None)


def as_values(obj: Any) -> Any:
    """A (nested) config dataclass as plain values; an :func:`extra_keys` dict is written flat
    beside its section's declared keys, so the values build the same config again."""
    if not dataclasses.is_dataclass(obj):
        return [as_values(v) for v in obj] if isinstance(obj, list) else obj
    extra = extra_field(type(obj))
    out = {f.name: as_values(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != extra}
    if extra is not None:
        out.update(copy.deepcopy(getattr(obj, extra)))  # like dataclasses.asdict: no shared lists
    return out
