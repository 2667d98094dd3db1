"""Atomic writes and all-or-none sets of result files."""
from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterable, Iterator

from .jsonio import dumps

# Errors that mean "this location cannot take the file": full disk or quota, read-only file
# system, no permission, file too large.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


#: The temporary name :func:`atomic_path` gives, and the pid of the process that made it.
TEMPORARY = re.compile(r"\.tmp(\d+)\..+")


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error, naming ``path`` (the file the caller asked for, not a temporary one)."""
    return OSError(exc.errno, exc.strerror, str(path))  # OSError() picks the errno's subclass


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside ``path``; on success rename it over ``path``.

    The temporary name ends with the final name, so writers that pick the format from the
    suffix (matplotlib, PIL, nibabel) still do. A full disk or read-only folder is reported as
    an ``OSError`` naming ``path``.

    Args:
        path: the final file.

    Yields:
        The temporary path to write to. It is removed if the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")  # as TEMPORARY matches it
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise _naming(exc, path) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries :func:`atomic_path` left under ``folder`` when its process was
    killed (``kill -9``, power loss): those whose process is no longer running.

    A live process's temporary is left alone: it may be writing it right now.

    Args:
        folder: searched recursively; a missing folder has none.

    Returns:
        The temporaries removed (files, or folders a copy was being staged in).
    """
    removed = []
    for path in sorted(Path(folder).rglob(".tmp*")):
        match = TEMPORARY.fullmatch(path.name)
        if match is None or _alive(int(match.group(1))) or not path.exists():
            continue
        with suppress(OSError):  # one that cannot be removed is left: it hides no result
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: the final file.
        text: its whole content.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any, indent: int = 2) -> None:
    """Write ``data`` as valid JSON atomically (:func:`~s2unet.io.jsonio.dumps`: NaN becomes null).

    Args:
        path: the final file.
        data: builtins (paths and other objects become their string form).
        indent: JSON indentation.
    """
    write_text(path, dumps(data, path, indent))


@contextmanager
def all_or_none(paths: Iterable[Path]) -> Iterator[None]:
    """Files that are only meaningful together: if the block fails, none of them is left.

    Predictions, tables and a summary from a run that stopped half-way (full disk, crash,
    Ctrl-C) would read as a complete result; removing the set makes the failure visible.

    Args:
        paths: every file the block may write (the ones it did not reach need not exist).
    """
    paths = [Path(p) for p in paths]
    try:
        yield
    except BaseException:
        for path in paths:
            with suppress(OSError):  # the original error is the one to report
                path.unlink(missing_ok=True)
        raise


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and make sure files can be created in it.

    Args:
        folder: an output folder.

    Raises:
        OSError: naming the folder (read-only file system, no permission, ...).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise _naming(exc, folder) from exc
