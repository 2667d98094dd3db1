"""(image, structure, phrase) samples for text-prompted training, from any multi-label dataset.

:class:`PhraseSampleDataset` wraps an image or slice dataset whose mask has one channel per
structure. Each item draws ``per_image`` structures (all of them by default) and for each a
training phrasing, seeded by (run seed, epoch, item) so an epoch replays exactly on resume.
The mask keeps the drawn structures' channels in draw order and ``phrase`` their phrase ids.
A structure absent from an image (an empty channel: a CT slice without lesion, a case whose
structure is not in view) is drawn like any other, so the model learns an empty mask for it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .transforms import item_seed


class PhraseSampleDataset(torch.utils.data.Dataset):
    """Pairs each image with phrases naming some of its structures.

    Args:
        base: a dataset whose samples hold ``mask`` (C, S, S), one channel per structure.
        phrase_ids: per structure channel, the ids of its training phrases (at least one).
        per_image: structures drawn per image, 1..C; 0 takes all C in channel order.
        seed: run seed.

    Samples are the base sample with ``mask`` (P, S, S) and ``phrase`` int64 (P,).
    """

    def __init__(self, base: torch.utils.data.Dataset, phrase_ids: Sequence[Sequence[int]], per_image: int,
                 seed: int) -> None:
        if not phrase_ids or any(len(ids) == 0 for ids in phrase_ids):
            raise ValueError("PhraseSampleDataset needs at least one phrase id for every structure channel")
        if not 0 <= per_image <= len(phrase_ids):
            raise ValueError(f"per_image {per_image} outside 0..{len(phrase_ids)}")
        self.base = base
        self.phrase_ids = [list(ids) for ids in phrase_ids]
        self.per_image = per_image
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the phrase draw and of the base dataset's augmentation."""
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.base[i])
        mask = sample["mask"]
        n = len(self.phrase_ids)
        if mask.ndim != 3 or mask.shape[0] != n:
            raise ValueError(f"item {i}: mask of shape {tuple(mask.shape)} has not one channel per structure ({n})")
        # A stream of its own (not the augmentation's): the phrase draw does not shift the augmentation.
        rng = np.random.default_rng([item_seed(self.seed, self.epoch, i), 1])
        chosen = np.arange(n) if self.per_image == 0 else rng.choice(n, size=self.per_image, replace=False)
        sample["mask"] = mask[torch.as_tensor(chosen)]
        sample["phrase"] = torch.as_tensor([self.phrase_ids[c][rng.integers(len(self.phrase_ids[c]))] for c in chosen],
                                           dtype=torch.int64)
        return sample
