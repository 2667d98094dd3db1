"""Writing files safely, the lowest layer (standard library only).

- :func:`atomic_path`: write under a temporary name, then rename over the final one;
  :func:`write_text` and :func:`write_json` for whole files; :func:`~s2unet.io.jsonio.dumps`, the
  JSON text of every file and log line (NaN and infinity become null, with a warning);
  :func:`remove_stale_temporaries` clears those a killed process left.
- :func:`all_or_none`: files that only mean something together; a failure leaves none of them.
- :func:`check_writable`: find a read-only or unwritable output folder before heavy work.
- :func:`exclusive_lock`: one process at a time in a folder (``fcntl.flock``).
- :func:`did_you_mean`: the known name closest to a mistyped one.
- :class:`OutputError`: an output location that cannot be used, with the reason.
- :class:`DataError`: a data file or folder that is missing, unreadable or inconsistent.

Case I/O (imported from its modules, so that importing this package stays light):
:mod:`s2unet.io.formats` (the registry: ``read_case``, ``case_stem``, ``read_labels``),
:mod:`s2unet.io.discovery` (``discover_cases``, ``case_id``: the one case finder),
:mod:`s2unet.io.case` (``CaseImage``, ``CaseFormat``), one module per format
(:mod:`~s2unet.io.nifti`, :mod:`~s2unet.io.pictures`, :mod:`~s2unet.io.dicom_series`,
:mod:`~s2unet.io.itk`).
"""
from .atomic import (
    WRITE_ERRNOS,
    all_or_none,
    atomic_path,
    check_writable,
    remove_stale_temporaries,
    write_json,
    write_text,
)
from .errors import DataError, OutputError
from .lock import exclusive_lock
from .names import did_you_mean

__all__ = [
    "WRITE_ERRNOS", "DataError", "OutputError", "all_or_none", "atomic_path", "check_writable", "did_you_mean",
    "exclusive_lock", "remove_stale_temporaries", "write_json", "write_text",
]
