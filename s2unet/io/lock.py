"""An exclusive lock on a folder, so two processes never write the same outputs at once."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import OutputError


@contextmanager
def exclusive_lock(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` for the block, or refuse at once.

    The lock belongs to the open file, so the kernel releases it when the process ends, even
    after a crash: a stale lock file never blocks anyone. The file is kept (removing it would
    let a second process lock a new file while a third still holds the old one); it holds the
    pid of the last holder, for the refusal message.

    Args:
        lock_file: the lock file (created if missing).
        what: how the refusal names the locked thing, e.g. "run directory runs/x".

    Raises:
        OutputError: another process (or another lock in this one) holds it.
    """
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            by = f"process {holder}" if holder.isdigit() else "another process"
            raise OutputError(f"{what} is in use by {by} (lock {lock_file}); wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
