"""Run-directory bookkeeping: one process at a time, the ``<name>-latest`` link, failed runs.

- A run directory is locked (``.lock``, ``fcntl.flock``) while a process trains or resumes in
  it; a second process is refused before it writes anything. The file goes when the run ends.
- ``<name>-latest`` (beside the run directories) is a symlink to the newest run of that name
  that has a checkpoint: it moves when a run first writes ``best.pt``, so comparison configs
  that read ``runs/<name>-latest/best.pt`` never land on a run without one.
- A run that raises (full disk, a bug, Ctrl-C) stays where it is, for ``--resume`` and for its
  records, with a ``FAILED`` file holding the error and traceback; a resumed run that then
  completes removes it. A completed run has ``summary.json`` (written last) and no ``FAILED``.
"""
from __future__ import annotations

import traceback
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from ..io import OutputError, atomic_path, exclusive_lock

LOCK_FILE = ".lock"
FAILED_FILE = "FAILED"


def latest_link(run_dir: Path, name: str) -> Path:
    """Where the ``<name>-latest`` link of runs named ``name`` lives (beside ``run_dir``)."""
    return Path(run_dir).with_name(f"{name}-latest")


def check_latest_link(link: Path) -> None:
    """Refuse a real file or folder where the ``-latest`` symlink belongs.

    Raises:
        OutputError: naming the path and what to do.
    """
    if link.exists() and not link.is_symlink():
        kind = "folder" if link.is_dir() else "file"
        raise OutputError(
            f"{link} is a real {kind}, but s2unet keeps {link.name} as a link to the newest run with a "
            "checkpoint (comparison configs read it); move it away or set another `name`"
        )


def point_latest_link(link: Path, run_dir: Path) -> None:
    """Point ``link`` at ``run_dir`` (relative, so the runs folder can move), replacing it atomically.

    Raises:
        OutputError: a real file or folder holds the link's name.
    """
    check_latest_link(link)
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    tmp.replace(link)


@contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """Lock ``run_dir`` for this process; mark it ``FAILED`` if the block raises.

    Args:
        run_dir: an existing run directory.

    Raises:
        OutputError: another process holds the directory.
    """
    with exclusive_lock(run_dir / LOCK_FILE, f"run directory {run_dir}"):
        try:
            yield
        except BaseException as exc:
            _mark_failed(run_dir, exc)
            raise
        (run_dir / FAILED_FILE).unlink(missing_ok=True)  # a resumed run that completes


def _mark_failed(run_dir: Path, exc: BaseException) -> None:
    """Write ``FAILED``: the error on the first line, how to resume, the traceback."""
    lines = [type(exc).__name__ + (f": {exc}" if str(exc) else "")]
    if (run_dir / "last.pt").is_file():
        lines.append(f"continue it with: python train.py --resume {run_dir}")
    text = "\n".join(lines) + "\n\n" + "".join(traceback.format_exception(exc))
    with suppress(OSError):  # on a full disk the marker may not fit; the error still reaches the user
        with atomic_path(run_dir / FAILED_FILE) as tmp:
            tmp.write_text(text)
