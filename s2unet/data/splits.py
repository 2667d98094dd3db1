"""Split case ids (patients) into train / val / test — never slices.

Slices of one CT volume are near-duplicates of each other, so a slice-level split would leak the
validation patient into training and inflate every metric. Every function here works on case
ids only, and each id lands in exactly one split.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Mapping, Optional, Sequence

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


def read_case_groups(path: str | Path) -> dict[str, str]:
    """Read a case -> group mapping (source hospital, scanner...) for ``split.mode: group``.

    Accepted: JSON ``{"case00": "groupA", ...}`` or a JSON list of objects with ``case`` and
    ``group`` keys (the layout of the shared ``cases.json``; other keys are ignored), or a CSV
    file with a header row holding ``case`` and ``group`` columns.

    Args:
        path: the file.

    Returns:
        Dict from case id to group name.

    Raises:
        DataError: missing or unreadable file, another layout, a case listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.split.groups: {path} does not exist")
    pairs: list[tuple[str, str]] = []
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                if not {"case", "group"} <= set(reader.fieldnames or []):
                    raise DataError(f"{path}: a groups CSV needs the header columns case,group; found {reader.fieldnames}")
                pairs = [(str(row["case"]).strip(), str(row["group"]).strip()) for row in reader]
        else:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                pairs = [(str(k), str(v)) for k, v in data.items()]
            elif isinstance(data, list) and all(isinstance(r, dict) and "case" in r and "group" in r for r in data):
                pairs = [(str(r["case"]), str(r["group"])) for r in data]
            else:
                raise DataError(f"{path}: expected {{case: group}} or a list of {{\"case\", \"group\"}} objects")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the case groups ({exc})") from exc
    twice = sorted(c for c, n in Counter(c for c, _ in pairs).items() if n > 1)
    if twice:
        raise DataError(f"{path}: cases listed more than once: {', '.join(twice)}")
    return dict(pairs)


def _group_split(ids: list[str], split: SplitConfig, groups: Optional[Mapping[str, str]],
                 rng: np.random.Generator) -> tuple[list[str], list[str], list[str]]:
    """Train/val from the training groups, test from the held-out groups (see split_cases)."""
    if groups is None:
        raise DataError("split mode 'group' needs the case -> group mapping (data.split.groups)")
    unmapped = [i for i in ids if i not in groups]
    if unmapped:
        raise DataError(f"data.split.groups has no group for {len(unmapped)} case(s): {', '.join(unmapped[:10])}")
    present = sorted({groups[i] for i in ids})
    test_groups = split.test_groups or [g for g in present if g not in split.train_groups]
    for what, names in (("train_groups", split.train_groups), ("test_groups", test_groups)):
        absent = [g for g in names if g not in present]
        if absent:
            raise DataError(f"data.split.{what} names groups without cases: {absent}; the groups are {present}")
    pool = [i for i in ids if groups[i] in split.train_groups]
    test = [i for i in ids if groups[i] in test_groups]
    order = [pool[i] for i in rng.permutation(len(pool))]
    n_val = min(_share(len(pool), split.val_ratio), max(0, len(pool) - 1))
    return sorted(order[n_val:]), sorted(order[:n_val]), test


def split_cases(case_ids: Sequence[str], split: SplitConfig, seed: int,
                groups: Optional[Mapping[str, str]] = None) -> dict[str, list[str]]:
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
        ``group``: cross-source. The cases of ``train_groups`` are shuffled with the seed and
            ``val_ratio`` of them (at least one when > 0) go to val, the rest to train; the
            cases of ``test_groups`` (empty: every group not trained on) are the test split.
            Cases of other groups are left out.

    Args:
        case_ids: all case ids (unique).
        split: the split config.
        seed: the run seed.
        groups: case id -> group, for mode ``group`` (:func:`read_case_groups`).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted.

    Raises:
        DataError: duplicate ids, unknown or overlapping listed ids, too few cases for the
            folds, cases without a group or groups without cases, or an empty training split.
    """
    dupes = sorted(i for i, n in Counter(case_ids).items() if n > 1)
    if dupes:
        raise DataError(f"duplicate case ids: {', '.join(dupes)}")
    ids = sorted(case_ids)
    known = set(ids)
    rng = np.random.default_rng(seed)

    if split.mode == "group":
        train, val, test = _group_split(ids, split, groups, rng)
    elif split.mode == "list":
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
