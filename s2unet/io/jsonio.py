"""JSON text that is always valid JSON (standard library only).

``json.dumps`` writes NaN and infinity as bare ``NaN`` / ``Infinity``, which no strict JSON
reader accepts, so one non-finite score would make a whole ``summary.json`` unreadable. Every
JSON file and JSON line the toolkit writes goes through :func:`dumps`: non-finite numbers become
``null`` and a warning names the file and the keys, so the value is neither lost silently nor
written invalid.
"""
from __future__ import annotations

import json
import math
import numbers
import warnings
from typing import Any, Optional

# Keys named in one warning; more are summarised by their count.
_NAMED = 5


def _finite(value: Any, where: str, bad: list[str]) -> Any:
    """``value`` with non-finite floats replaced by None (their key paths added to ``bad``)."""
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k), bad) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{where}[{i}]", bad) for i, v in enumerate(value)]
    if isinstance(value, bool):
        return value
    # numbers.Integral / Real also match numpy scalars, which json itself would not serialise.
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if math.isfinite(value):
            return float(value)
        bad.append(where or "the value")
        return None
    return value


def dumps(data: Any, source: object, indent: Optional[int] = None) -> str:
    """``data`` as valid JSON text; NaN and infinity are written as null, with a warning.

    Args:
        data: builtins and numpy scalars (paths and other objects become their string form).
        source: the file the text is for, named in the warning.
        indent: JSON indentation (None: one line).

    Returns:
        The JSON text.
    """
    bad: list[str] = []
    clean = _finite(data, "", bad)
    if bad:
        more = f" and {len(bad) - _NAMED} more" if len(bad) > _NAMED else ""
        warnings.warn(f"{source}: non-finite value(s) written as null (JSON has no NaN or infinity): "
                      f"{', '.join(bad[:_NAMED])}{more}", stacklevel=2)
    return json.dumps(clean, indent=indent, default=str, allow_nan=False)
