"""Atomic file writing for inference outputs: nothing half-written ever sits under a final name."""
from __future__ import annotations

import csv
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..engine.records import write_json

__all__ = ["atomic_path", "write_csv", "write_json", "write_png"]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside ``path``; on success rename it over ``path``.

    The temporary name ends with the final name, so writers that pick the format from the
    suffix (matplotlib, PIL, nibabel) still do.

    Args:
        path: the final file.

    Yields:
        The temporary path to write to. It is removed if the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as CSV; the columns are the union of the rows' keys in first-seen order.

    Args:
        path: output file.
        rows: flat dicts (missing keys are left empty).
    """
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a 2D uint8 or uint16 array as a grayscale PNG.

    Args:
        path: output ``.png`` file.
        array: (H, W) integer array.
    """
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
