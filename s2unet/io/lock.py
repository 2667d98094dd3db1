"""An exclusive lock on a folder, so two processes never write the same outputs at once."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import OutputError


def _still_named(fd: int, lock_file: Path) -> bool:
    """Whether ``lock_file`` still names the file open as ``fd`` (its holder may have removed it)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(lock_file))
    except FileNotFoundError:
        return False


@contextmanager
def exclusive_lock(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` for the block, or refuse at once.

    The lock belongs to the open file, so the kernel releases it when the process ends, even
    after a crash: a lock file left by a killed process never blocks anyone. The holder removes
    the file when the block ends, while still holding it; a process that opened the file just
    before and then gets the lock finds the name gone (or naming a newer file) and locks what
    the name holds now, so two processes never hold locks on two files of one name. The file
    holds the holder's pid, for the refusal message.

    Args:
        lock_file: the lock file (created if missing).
        what: how the refusal names the locked thing, e.g. "run directory runs/x".

    Raises:
        OutputError: another process (or another lock in this one) holds it.
    """
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            by = f"process {holder}" if holder.isdigit() else "another process"
            raise OutputError(f"{what} is in use by {by} (lock {lock_file}); wait for it to finish") from None
        if _still_named(fd, lock_file):
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        lock_file.unlink(missing_ok=True)
        os.close(fd)
