"""Suggesting the closest known name for a mistyped one (standard library only)."""
from __future__ import annotations

import difflib
from typing import Iterable


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
