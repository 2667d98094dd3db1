"""Split case ids (patients) into train / val / test — never slices.

Slices of one CT volume are near-duplicates of each other, so a slice-level split would leak the
validation patient into training and inflate every metric. Every function here works on case
ids only, and each id lands in exactly one split.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from ..config import SplitConfig
from .errors import DataError

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def _share(n: int, ratio: float) -> int:
    """Cases for a ratio: rounded, but at least one when the ratio asks for any and n >= 2."""
    if ratio <= 0 or n == 0:
        return 0
    return max(1, int(round(ratio * n))) if n >= 2 else 0


def _check_known(ids: Sequence[str], known: set[str], what: str) -> None:
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise DataError(f"split.{what} names unknown case ids: {', '.join(map(str, unknown))}")


def split_cases(case_ids: Sequence[str], split: SplitConfig, seed: int) -> dict[str, list[str]]:
    """Assign every case id to train, val or test.

    Modes:
        ``ratio``: a seeded shuffle of the sorted ids; ``split.test`` ids (if listed) are held
            out as test first, else ``test_ratio`` of the cases; then ``val_ratio`` of all cases
            go to val (at least one whenever the ratio is > 0), the rest to train.
        ``kfold``: the test cases are held out as in ``ratio``; the rest, sorted and permuted
            with the seed, are cut into ``folds`` near-equal folds; fold ``fold`` is val.
            The same seed gives the same folds for every ``fold`` value, so the folds partition
            the cases.
        ``list``: the lists as given. Listed ids must exist and the lists must be disjoint; an
            empty ``train`` list means "every case not in val or test".

    Args:
        case_ids: all case ids (unique).
        split: the split config.
        seed: the run seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted.

    Raises:
        DataError: duplicate ids, unknown or overlapping listed ids, too few cases for the
            folds, or an empty training split.
    """
    dupes = sorted(i for i, n in Counter(case_ids).items() if n > 1)
    if dupes:
        raise DataError(f"duplicate case ids: {', '.join(dupes)}")
    ids = sorted(case_ids)
    known = set(ids)
    rng = np.random.default_rng(seed)

    if split.mode == "list":
        for name in SPLIT_NAMES:
            _check_known(getattr(split, name), known, name)
        seen: dict[str, str] = {}
        clashes = []
        for name in SPLIT_NAMES:
            for cid in getattr(split, name):
                if cid in seen and seen[cid] != name:
                    clashes.append(f"{cid} ({seen[cid]} and {name})")
                seen.setdefault(cid, name)
        if clashes:
            raise DataError(f"split lists overlap: {', '.join(clashes)}")
        val, test = sorted(set(split.val)), sorted(set(split.test))
        train = sorted(set(split.train)) if split.train else [i for i in ids if i not in set(val) | set(test)]
    else:
        if split.test:
            _check_known(split.test, known, "test")
            test = sorted(set(split.test))
            rest = [i for i in ids if i not in set(test)]
        else:
            order = [ids[i] for i in rng.permutation(len(ids))]
            n_test = _share(len(ids), split.test_ratio)
            test, rest = sorted(order[:n_test]), sorted(order[n_test:])
        if split.mode == "ratio":
            order = [rest[i] for i in rng.permutation(len(rest))]
            n_val = min(_share(len(ids), split.val_ratio), max(0, len(rest) - 1))
            val, train = sorted(order[:n_val]), sorted(order[n_val:])
        elif split.mode == "kfold":
            if split.folds < 2 or not 0 <= split.fold < split.folds:
                raise DataError(f"kfold needs folds >= 2 and 0 <= fold < folds, got fold {split.fold} of {split.folds}")
            if len(rest) < split.folds:
                raise DataError(f"kfold with {split.folds} folds needs at least {split.folds} cases, found {len(rest)}")
            order = [rest[i] for i in rng.permutation(len(rest))]
            folds = np.array_split(np.arange(len(order)), split.folds)
            val = sorted(order[i] for i in folds[split.fold])
            train = sorted(set(rest) - set(val))
        else:
            raise DataError(f"unknown split mode {split.mode!r}")
    if not train:
        raise DataError(f"the training split is empty ({len(ids)} cases, mode {split.mode})")
    return {"train": list(train), "val": list(val), "test": list(test)}


def kfold_partition(case_ids: Sequence[str], split: SplitConfig, seed: int) -> list[list[str]]:
    """All validation folds of a kfold split (for cross-validation drivers and tests).

    Args:
        case_ids: all case ids.
        split: a kfold config (``fold`` is ignored).
        seed: the run seed.

    Returns:
        ``folds`` lists of case ids; together they cover every non-test case exactly once.
    """
    out = []
    for k in range(split.folds):
        cfg = SplitConfig(**{**split.__dict__, "mode": "kfold", "fold": k})
        out.append(split_cases(case_ids, cfg, seed)["val"])
    return out
