"""The one exception the data package raises (defined with the readers, in :mod:`s2unet.io`)."""
from __future__ import annotations

from ..io.errors import DataError

__all__ = ["DataError"]
