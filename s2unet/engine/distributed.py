"""torch.distributed set-up for ``torchrun``: one process per device, rank 0 writes."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..config import ConfigError, check_device_name


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (no-op when alone).

    NCCL on CUDA, gloo otherwise (CPU tests run two gloo processes).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, key: str) -> torch.device:
    """The torch device a device string names, refused unless this machine has it.

    Args:
        name: ``auto`` (the local CUDA device when present, per LOCAL_RANK under torchrun,
            else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        key: the config key or option the name came from, named in errors.

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


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value)
        value /= info.world_size
    return value


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
