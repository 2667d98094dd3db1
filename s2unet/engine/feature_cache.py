"""Encoder features kept across epochs for decoder-only training.

When nothing inside the frozen encoder trains and the inputs are not augmented, every epoch
would recompute identical features; the encoder dominates the cost, so computing them once
makes later epochs several times faster. Features are stored per item (case, slice) in fp16,
in memory up to a byte budget and on disk beyond it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Hashable, Sequence

import torch

from ..models.checkpoint import atomic_save
from ..models.s2unet import S2UNet


class FeatureCache:
    """Per-item encoder features, bounded in memory, spilling to ``spill_dir``.

    Args:
        max_bytes: memory budget for cached features.
        spill_dir: folder for features beyond the budget.
        dtype: storage precision (fp16 halves memory; the decoder still computes in fp32).
    """

    def __init__(self, max_bytes: int, spill_dir: Path, dtype: torch.dtype = torch.float16) -> None:
        self.max_bytes = max_bytes
        self.spill_dir = spill_dir
        self.dtype = dtype
        self._memory: dict[Hashable, list[torch.Tensor]] = {}
        self._on_disk: dict[Hashable, Path] = {}
        self.nbytes = 0
        self.hits = self.misses = 0

    def _store(self, key: Hashable, maps: list[torch.Tensor]) -> None:
        if key in self._memory or key in self._on_disk:  # the same item twice in one batch
            return
        size = sum(m.numel() * m.element_size() for m in maps)
        if self.nbytes + size <= self.max_bytes:
            self._memory[key] = maps
            self.nbytes += size
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f"{len(self._on_disk):08d}.pt"
        atomic_save(maps, path)
        self._on_disk[key] = path

    def _load(self, key: Hashable) -> list[torch.Tensor] | None:
        if key in self._memory:
            return self._memory[key]
        if key in self._on_disk:
            return torch.load(self._on_disk[key], weights_only=True)
        return None

    def clear(self) -> None:
        """Forget everything and delete spilled files."""
        for path in self._on_disk.values():
            path.unlink(missing_ok=True)
        if self.spill_dir.is_dir() and not any(self.spill_dir.iterdir()):
            self.spill_dir.rmdir()
        self._memory.clear()
        self._on_disk.clear()
        self.nbytes = 0

    def features(self, model: S2UNet, images: torch.Tensor, keys: Sequence[Hashable]) -> list[torch.Tensor]:
        """The encoder maps of a batch, computing only the items not seen before.

        Args:
            model: the (unwrapped) model whose encoder produced the cached maps.
            images: (B, 3, H, W) batch, in the same order as ``keys``.
            keys: one hashable identity per item, e.g. (case, slice).

        Returns:
            Four (B, C_i, h_i, w_i) maps on the images' device, in fp32.
        """
        found = [self._load(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                fresh = model.features(images[missing])
            for j, i in enumerate(missing):
                found[i] = [m[j].to("cpu", self.dtype).clone() for m in fresh]
                self._store(keys[i], found[i])
        # Gathering stored maps is data movement, not compute: outside autocast, whose CPU
        # rules reject fp16 inputs to torch.stack when the autocast dtype is bf16.
        with torch.autocast(images.device.type, enabled=False):
            return [torch.stack([f[level] for f in found]).to(images.device, torch.float32)
                    for level in range(len(found[0]))]
