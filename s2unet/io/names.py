"""Suggesting the closest known name for a mistyped one (standard library only)."""
from __future__ import annotations

import difflib
from typing import Iterable, Mapping, Sequence, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``name``, or None when none is close.

    Args:
        name: what the user wrote.
        known: the accepted names.

    Returns:
        One of ``known`` (``difflib``'s default similarity cut-off, 0.6), or None.
    """
    close = difflib.get_close_matches(name, list(known), n=1)
    return close[0] if close else None


def lookup(registry: Mapping[str, T], name: str, what: str, known: Sequence[str] | None = None) -> T:
    """A registry's entry by name, or one error naming the closest known name and all of them.

    Args:
        registry: the entries by name.
        name: the name asked for.
        what: what the registry holds, e.g. ``"encoder"``.
        known: the names listed in the error (the registry's, in its order, by default).

    Raises:
        KeyError: ``unknown <what> '<name>' (did you mean ...?); known: ...``.
    """
    if name not in registry:
        close = did_you_mean(name, registry)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise KeyError(f"unknown {what} {name!r}{hint}; known: {', '.join(known or list(registry))}")
    return registry[name]


def add_unique(registry: dict[str, T], name: str, entry: T, what: str) -> None:
    """Add a registry entry under a new name.

    Raises:
        KeyError: ``<what> '<name>' registered twice``.
    """
    if name in registry:
        raise KeyError(f"{what} {name!r} registered twice")
    registry[name] = entry
