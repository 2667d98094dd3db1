"""Writing inference outputs: atomically (nothing half-written ever sits under a final name),
CSV cells safe to open in a spreadsheet, and no silent replacement of earlier results."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional, Sequence

from ..io import atomic_path, write_json

__all__ = ["atomic_path", "earlier_results", "write_csv", "write_json"]

# A text cell starting with one of these is run as a formula by Excel, LibreOffice and Google
# Sheets (tab and carriage return are the OWASP additions). Case names come from file names.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, with a leading apostrophe.

    Only text is escaped: a negative number is a number and stays one.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as CSV; the columns are the union of the rows' keys in first-seen order.

    Text cells (header included) that start with ``=``, ``+``, ``-``, ``@``, tab or carriage
    return get a leading ``'`` so that opening the file in a spreadsheet cannot run a formula.

    Args:
        path: output file.
        rows: flat dicts (missing keys are left empty).
    """
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([_csv_cell(c) for c in columns])
        writer.writerows([_csv_cell(row.get(c, "")) for c in columns] for row in rows)


def earlier_results(folder: Path, names: Sequence[str]) -> Optional[str]:
    """The refusal for a folder that already holds some of ``names``, or None.

    Args:
        folder: the output folder.
        names: the file names a run would write there.

    Returns:
        One line naming the folder and (up to five of) the files, suggesting ``--overwrite``.
    """
    existing = [n for n in names if (Path(folder) / n).exists()]
    if not existing:
        return None
    shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
    return f"{folder} already holds results ({shown}); use --overwrite or another --output"
