"""A seeded, resumable, rank-aware sampler and lesion-oversampling weights.

The order of epoch ``e`` depends only on ``(seed, e)``, so a run resumed from a checkpoint
that stored (epoch, samples seen) replays exactly the same remaining samples, and every
rank of a distributed run derives the same global order without communication.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence

import numpy as np
import torch


class EpochSampler(torch.utils.data.Sampler[int]):
    """Indices for one epoch, drawn from ``np.random.default_rng([seed, epoch])``.

    Per epoch the sampler draws ``num_samples`` indices globally:

    * no weights, ``num_samples <= n_items``: a uniform draw without replacement (a random
      subset in random order; all items when ``num_samples == n_items``);
    * no weights, ``num_samples > n_items``: consecutive independent permutations, cut to
      length, so every item appears as evenly as possible;
    * weights: a weighted draw with replacement (lesion oversampling);
    * ``shuffle=False`` without weights: ``0, 1, 2, ...`` (wrapping), for evaluation.

    The list is padded (by repeating its start) to a multiple of ``world_size`` and rank ``r``
    takes ``indices[r::world_size]``, so ranks are disjoint and together cover the draw.
    ``start_index`` skips that many of this rank's samples, for resuming mid-epoch; it is
    reset by :meth:`set_epoch` unless passed there.

    Args:
        n_items: dataset length.
        num_samples: samples per epoch over all ranks; 0 or None means ``n_items``.
        seed: run seed.
        weights: optional non-negative per-item weights (any scale).
        rank: this process's rank.
        world_size: number of processes.
        shuffle: False gives the plain order (ignored when weights are given).
    """

    def __init__(
        self,
        n_items: int,
        num_samples: Optional[int],
        seed: int,
        weights: Optional[Sequence[float]] = None,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if n_items <= 0:
            raise ValueError("EpochSampler needs at least one item")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.n_items = int(n_items)
        self.num_samples = int(num_samples) if num_samples else self.n_items
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = bool(shuffle)
        self.weights: Optional[np.ndarray] = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (self.n_items,) or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
                raise ValueError("weights must be n_items finite non-negative numbers with a positive sum")
            self.weights = w / w.sum()
        self.epoch = 0
        self.start_index = 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Select the epoch (and optionally where in it to resume).

        Args:
            epoch: epoch number.
            start_index: samples of this rank already consumed in that epoch.
        """
        self.epoch = int(epoch)
        self.set_start(start_index)

    def set_start(self, start_index: int) -> None:
        """Skip the first ``start_index`` samples of this rank in the current epoch."""
        if not 0 <= start_index <= self.per_rank:
            raise ValueError(f"start_index {start_index} outside 0..{self.per_rank}")
        self.start_index = int(start_index)

    @property
    def per_rank(self) -> int:
        """Samples per rank per epoch (before skipping)."""
        return math.ceil(self.num_samples / self.world_size)

    def epoch_indices(self, epoch: Optional[int] = None) -> np.ndarray:
        """The global (all ranks, padded) index list of an epoch.

        Args:
            epoch: epoch number; None uses the current one.

        Returns:
            int64 array of length ``per_rank * world_size``.
        """
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        n, m = self.n_items, self.num_samples
        if self.weights is not None:
            idx = rng.choice(n, size=m, replace=True, p=self.weights)
        elif not self.shuffle:
            idx = np.arange(m) % n
        elif m <= n:
            idx = rng.permutation(n)[:m]
        else:
            idx = np.concatenate([rng.permutation(n) for _ in range(math.ceil(m / n))])[:m]
        total = self.per_rank * self.world_size
        if total > m:  # pad by wrapping so each rank gets the same count (DDP needs equal steps)
            idx = np.concatenate([idx, np.resize(idx, total - m)])
        return idx.astype(np.int64)

    def rank_indices(self, epoch: Optional[int] = None) -> np.ndarray:
        """This rank's full index list for an epoch (before ``start_index`` is applied)."""
        return self.epoch_indices(epoch)[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_indices()[self.start_index :].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start_index


def lesion_weights(flags: Sequence[bool], share: float) -> np.ndarray:
    """Per-item weights so that a fraction ``share`` of weighted draws hits lesion items.

    Args:
        flags: True for items (slices) with foreground.
        share: wanted fraction of draws from lesion items, in [0, 1). 0 means no
            oversampling: uniform weights, i.e. the natural lesion fraction.

    Returns:
        float64 weights summing to 1. Uniform when share is 0 or when all or no items are
        lesion items (nothing to rebalance).
    """
    f = np.asarray(flags, dtype=bool)
    n = f.size
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    if not 0.0 <= share < 1.0:
        raise ValueError(f"lesion share {share} outside [0, 1)")
    n_les = int(f.sum())
    if share == 0.0 or n_les == 0 or n_les == n:
        return np.full(n, 1.0 / n)
    return np.where(f, share / n_les, (1.0 - share) / (n - n_les))


def share_weights(weights: np.ndarray, part: np.ndarray, share: float) -> np.ndarray:
    """Rescale per-item weights so that a fraction ``share`` of weighted draws hits ``part``.

    Within each side the items keep their relative weights (e.g. the lesion oversampling).

    Args:
        weights: non-negative per-item weights, positive on both sides.
        part: bool per item, the side that gets ``share``.
        share: fraction of draws from ``part``, in (0, 1).

    Returns:
        float64 weights summing to 1.
    """
    w = np.asarray(weights, dtype=np.float64)
    part = np.asarray(part, dtype=bool)
    if not 0.0 < share < 1.0:
        raise ValueError(f"share {share} outside (0, 1)")
    if not (w[part].sum() > 0 and w[~part].sum() > 0):
        raise ValueError("share_weights needs weighted items on both sides")
    return np.where(part, w * share / w[part].sum(), w * (1.0 - share) / w[~part].sum())
