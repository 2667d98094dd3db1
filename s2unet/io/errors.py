"""The error of an output location that cannot be used."""
from __future__ import annotations


class OutputError(Exception):
    """An output file or folder cannot be used (in use, or in the way); the message says why."""
