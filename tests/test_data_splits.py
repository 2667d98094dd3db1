"""Case-level splits and the resumable, rank-aware epoch sampler with lesion oversampling."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from s2unet.config import DataConfig, SplitConfig
from s2unet.data import (
    DataError,
    EpochSampler,
    SliceDataset,
    build_datasets,
    kfold_partition,
    lesion_weights,
    make_train_sampler,
    split_cases,
)

IDS = [f"case{i:02d}" for i in range(18)]


def _assert_partition(split: dict[str, list[str]], ids: list[str]) -> None:
    seen = split["train"] + split["val"] + split["test"]
    assert len(seen) == len(set(seen)), "a case is in two splits"
    assert sorted(seen) == sorted(ids)


# ---------------------------------------------------------------------------------------- splits
def test_ratio_split_is_seeded_and_by_case() -> None:
    cfg = SplitConfig(mode="ratio", val_ratio=0.2, test_ratio=0.1)
    a = split_cases(IDS, cfg, seed=0)
    _assert_partition(a, IDS)
    assert len(a["val"]) == 4 and len(a["test"]) == 2
    assert split_cases(list(reversed(IDS)), cfg, seed=0) == a  # input order does not matter
    assert split_cases(IDS, cfg, seed=1) != a
    tiny = split_cases(["a", "b"], SplitConfig(val_ratio=0.2), seed=0)
    assert len(tiny["val"]) == 1 and len(tiny["train"]) == 1


def test_kfold_folds_partition_the_cases_and_hold_out_test() -> None:
    cfg = SplitConfig(mode="kfold", folds=5, test=["case00", "case17"])
    folds = kfold_partition(IDS, cfg, seed=3)
    flat = [c for f in folds for c in f]
    assert sorted(flat) == sorted(set(IDS) - {"case00", "case17"}) and len(flat) == len(set(flat))
    assert sorted(len(f) for f in folds) == [3, 3, 3, 3, 4]
    for k in range(5):
        s = split_cases(IDS, SplitConfig(mode="kfold", folds=5, fold=k, test=["case00", "case17"]), seed=3)
        _assert_partition(s, IDS)
        assert s["test"] == ["case00", "case17"] and s["val"] == folds[k]
    with pytest.raises(DataError, match="at least 5"):
        split_cases(IDS[:3], SplitConfig(mode="kfold", folds=5), seed=0)


def test_list_mode_validates_ids() -> None:
    cfg = SplitConfig(mode="list", val=["case01", "case02"], test=["case03"])
    s = split_cases(IDS, cfg, seed=0)
    _assert_partition(s, IDS)  # empty train list = all the others
    with pytest.raises(DataError, match="case99.*nobody|nobody.*case99"):
        split_cases(IDS, SplitConfig(mode="list", train=["case00", "case99", "nobody"], val=["case01"]), seed=0)
    with pytest.raises(DataError, match="case01"):
        split_cases(IDS, SplitConfig(mode="list", train=["case00", "case01"], val=["case01"]), seed=0)
    with pytest.raises(DataError, match="case99"):
        split_cases(IDS, SplitConfig(mode="kfold", test=["case99"]), seed=0)
    with pytest.raises(DataError, match="duplicate.*case05"):
        split_cases(IDS + ["case05"], SplitConfig(), seed=0)


def test_datasets_never_share_a_case(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(6):
        img = np.full((8, 8, 3 + i), i * 10, np.uint8)
        lab = np.zeros_like(img)
        lab[2:4, 2:4, 1] = 1
        for sub, arr in (("images", img), ("labels", lab)):
            nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / sub / f"p{i}.nii.gz"))
    cfg = DataConfig(kind="volume", root=str(tmp_path), labels=["labels"], image_size=8,
                     split=SplitConfig(val_ratio=0.34, test_ratio=0.17))
    bundle = build_datasets(cfg, seed=0)
    cases_in = {name: {c for c, _ in getattr(bundle, name).items} for name in ("train", "val", "test")}
    assert cases_in["train"] and cases_in["val"] and cases_in["test"]
    assert not (cases_in["train"] & cases_in["val"]) and not (cases_in["train"] & cases_in["test"])
    assert not (cases_in["val"] & cases_in["test"])
    assert cases_in == {k: set(v) for k, v in bundle.split.items()}
    assert bundle.train.augment is not None and bundle.val.augment is None
    # Every slice of a case goes with its case.
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == sum(3 + i for i in range(6))


# --------------------------------------------------------------------------------------- sampler
def test_sampler_is_deterministic_per_epoch() -> None:
    a, b = EpochSampler(50, 30, seed=5), EpochSampler(50, 30, seed=5)
    assert list(a) == list(b) and len(set(a)) == 30  # without replacement
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)
    full = EpochSampler(10, 0, seed=0)
    assert sorted(full) == list(range(10))
    long = list(EpochSampler(10, 25, seed=0))
    assert np.bincount(long, minlength=10).min() >= 2  # consecutive permutations, not iid
    assert list(EpochSampler(4, 6, seed=0, shuffle=False)) == [0, 1, 2, 3, 0, 1]


def test_ranks_are_disjoint_and_cover_the_epoch() -> None:
    world = 3
    samplers = [EpochSampler(20, 20, seed=1, rank=r, world_size=world) for r in range(world)]
    parts = [list(s) for s in samplers]
    assert len({len(p) for p in parts}) == 1 and len(samplers[0]) == 7  # 20 padded to 21
    union = sorted(i for p in parts for i in p)
    assert set(union) == set(range(20)) and len(union) == 21  # one padding repeat only
    exact = [list(EpochSampler(21, 21, seed=1, rank=r, world_size=world)) for r in range(world)]
    flat = [i for p in exact for i in p]
    assert sorted(flat) == list(range(21))  # disjoint when no padding is needed
    glob = samplers[0].epoch_indices()
    for r, p in enumerate(parts):
        assert p == glob[r::world].tolist()


def test_resume_from_start_index_gives_the_tail() -> None:
    s = EpochSampler(40, 40, seed=9, rank=1, world_size=2)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, start_index=7)
    assert list(s) == full[7:] and len(s) == len(full) - 7
    resumed = EpochSampler(40, 40, seed=9, rank=1, world_size=2)
    resumed.set_epoch(3)
    resumed.set_start(7)
    assert list(resumed) == full[7:]
    resumed.set_epoch(4)
    assert resumed.start_index == 0 and len(resumed) == 20
    with pytest.raises(ValueError):
        resumed.set_start(21)


def test_lesion_oversampling_gives_the_requested_share() -> None:
    flags = np.zeros(1000, bool)
    flags[:50] = True  # 5 % of slices have a lesion
    w = lesion_weights(flags, 0.5)
    assert w.sum() == pytest.approx(1.0) and w[0] > w[-1]
    draws = np.fromiter(EpochSampler(1000, 20000, seed=0, weights=w), dtype=np.int64)
    assert abs(flags[draws].mean() - 0.5) < 0.02
    uniform = lesion_weights(flags, 0.0)
    np.testing.assert_allclose(uniform, 1 / 1000)
    draws = np.fromiter(EpochSampler(1000, 20000, seed=0, weights=uniform), dtype=np.int64)
    assert abs(flags[draws].mean() - 0.05) < 0.01
    np.testing.assert_allclose(lesion_weights(np.ones(4, bool), 0.7), 0.25)  # nothing to rebalance


def test_make_train_sampler_uses_lesion_flags(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    img = np.zeros((6, 6, 20), np.uint8)
    lab = np.zeros_like(img)
    lab[1:3, 1:3, 4] = 1
    for sub, arr in (("images", img), ("labels", lab)):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / sub / "v.nii.gz"))
    cfg = DataConfig(kind="volume", root=str(tmp_path), labels=["labels"], image_size=8, lesion_oversample=0.5)
    from s2unet.data import find_cases

    ds = SliceDataset(find_cases(cfg), cfg, train=True, seed=0)
    sampler = make_train_sampler(ds, cfg, num_samples=4000, seed=0)
    draws = np.array(list(sampler))
    lesion = 20 - 1 - 4  # the RAS-stored slice 4, served from the head down (the orientation convention)
    assert abs((draws == lesion).mean() - 0.5) < 0.03
