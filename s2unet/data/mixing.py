"""A training set of new items followed by rehearsed items of another (source) training set."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from torch.utils.data import Dataset

from .datasets import SliceDataset

# Rehearsed cases are renamed so that a case id of both sets cannot mix up per-case state
# (the feature cache keys on case and slice).
REHEARSED_PREFIX = "rehearsed:"


class RehearsalMix(Dataset):
    """This run's training items, then a source run's, drawn at ``share`` for the source.

    Args:
        new: this run's training dataset.
        source: the rehearsed training dataset, prepared at the same image size.
        share: the fraction of training draws to take from ``source`` (the sampler reads it).
    """

    def __init__(self, new: SliceDataset, source: SliceDataset, share: float) -> None:
        if not 0.0 < share < 1.0:
            raise ValueError(f"rehearsal share {share} outside (0, 1)")
        self.new, self.source, self.share = new, source, share
        self.items = list(new.items) + [(REHEARSED_PREFIX + case, k) for case, k in source.items]

    def __len__(self) -> int:
        return len(self.new) + len(self.source)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < len(self.new):
            return self.new[i]
        sample = self.source[i - len(self.new)]
        return {**sample, "case": REHEARSED_PREFIX + sample["case"]}

    def set_epoch(self, epoch: int) -> None:
        self.new.set_epoch(epoch)
        self.source.set_epoch(epoch)

    def rehearsed(self) -> np.ndarray:
        """bool per item: it comes from the source."""
        return np.arange(len(self)) >= len(self.new)

    def lesion_flags(self) -> Optional[np.ndarray]:
        """bool per item, as :meth:`SliceDataset.lesion_flags`; None unless both sets have them."""
        flags = [self.new.lesion_flags(), self.source.lesion_flags()]
        return None if any(f is None for f in flags) else np.concatenate(flags)
