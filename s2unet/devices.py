"""Turning a device string into a torch device this machine has (used by training and inference)."""
from __future__ import annotations

import os

import torch

from .config import ConfigError, check_device_name


def resolve_device(name: str, key: str) -> torch.device:
    """The torch device a device string names, refused unless this machine has it.

    Args:
        name: ``auto`` (the local CUDA device when present, per LOCAL_RANK under torchrun,
            else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        key: the config key or option the name came from, named in errors.

    Returns:
        The device.

    Raises:
        ConfigError: an unknown device string, or a CUDA device this machine does not have.
    """
    check_device_name(name, key)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{key} {name!r}: this machine has no usable CUDA device; use auto or cpu")
        if (device.index or 0) >= count:
            raise ConfigError(f"{key} {name!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return device
