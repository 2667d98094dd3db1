"""The error of an output location that cannot be used."""
from __future__ import annotations


class OutputError(Exception):
    """An output file or folder cannot be used (in use, or in the way); the message says why."""


class DataError(ValueError):
    """A data file or folder is missing, unreadable or inconsistent; the message names it.

    A subclass of ValueError so callers that already catch bad-value errors keep working, while
    the CLI can catch this class alone and print the message without a traceback.
    """
