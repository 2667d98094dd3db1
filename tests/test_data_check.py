"""The pre-flight data check finds each kind of problem and names the file; case discovery."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from s2unet.config import DataConfig, SplitConfig
from s2unet.data import DataError, SliceDataset, build_datasets, check_data, find_cases


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _issues_for(report, name: str) -> list:
    return [i for i in report.issues if Path(i.path).name == name]


def _mask(shape=(16, 16)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[4:10, 4:10] = 255
    return m


def test_image_check_finds_each_problem(tmp_path: Path) -> None:
    img = np.full((16, 16), 100, np.uint8)
    _png(tmp_path / "images/good.png", img)
    _png(tmp_path / "masks/good.png", _mask())
    _png(tmp_path / "images/nolabel.png", img)  # image without mask
    _png(tmp_path / "masks/orphan.png", _mask())  # mask without image
    (tmp_path / "images/corrupt.png").write_bytes(b"\x89PNG broken")
    _png(tmp_path / "masks/corrupt.png", _mask())
    _png(tmp_path / "images/small.png", img)
    _png(tmp_path / "masks/small.png", _mask((8, 8)))  # shape mismatch
    _png(tmp_path / "images/empty.png", img)
    _png(tmp_path / "masks/empty.png", np.zeros((16, 16), np.uint8))
    soft = _mask()
    soft[3, 4:10] = 128  # anti-aliased edge
    _png(tmp_path / "images/soft.png", img)
    _png(tmp_path / "masks/soft.png", soft)
    nan = np.full((16, 16), 0.5, np.float32)
    nan[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "images/nan.tif", nan)
    _png(tmp_path / "masks/nan.png", _mask())

    cfg = DataConfig(root=str(tmp_path), labels=["masks"])
    report = check_data(cfg, find_cases(cfg))
    fatal = {Path(i.path).name for i in report.fatal}
    warn = {Path(i.path).name for i in report.warnings}
    assert fatal == {"nolabel.png", "corrupt.png", "small.png", "nan.tif"}
    assert warn == {"orphan.png", "empty.png", "soft.png"}
    assert "missing" in _issues_for(report, "nolabel.png")[0].message
    assert "unreadable" in _issues_for(report, "corrupt.png")[0].message
    assert "shape" in _issues_for(report, "small.png")[0].message
    assert "NaN" in _issues_for(report, "nan.tif")[0].message
    assert "empty" in _issues_for(report, "empty.png")[0].message
    assert "distinct values" in _issues_for(report, "soft.png")[0].message
    assert "good.png" not in fatal | warn
    with pytest.raises(DataError) as err:
        report.raise_if_fatal()
    for name in ("nolabel.png", "corrupt.png", "small.png", "nan.tif"):
        assert name in str(err.value)
    with pytest.raises(DataError, match="nan.tif"):
        build_datasets(cfg, seed=0)  # stops before any dataset is built


def test_multiclass_label_range_is_fatal(tmp_path: Path) -> None:
    _png(tmp_path / "images/a.png", np.zeros((8, 8), np.uint8))
    lab = np.zeros((8, 8), np.uint8)
    lab[0, 0], lab[1, 1] = 2, 5
    _png(tmp_path / "labels/a.png", lab)
    cfg = DataConfig(root=str(tmp_path), labels=["labels"], task="multiclass", num_classes=3)
    report = check_data(cfg, find_cases(cfg))
    assert [Path(i.path).name for i in report.fatal] == ["a.png"]
    assert "5" in report.fatal[0].message and "0..2" in report.fatal[0].message
    cfg.num_classes = 6
    assert check_data(cfg, find_cases(cfg)).ok


def _nii(path: Path, arr: np.ndarray, affine: np.ndarray = np.eye(4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))


def test_volume_check_geometry_nan_corrupt(tmp_path: Path) -> None:
    img = np.zeros((8, 8, 4), np.uint8)
    lab = np.zeros_like(img)
    lab[2:4, 2:4, 1] = 1
    _nii(tmp_path / "images/ok.nii.gz", img)
    _nii(tmp_path / "labels/ok.nii.gz", lab)
    moved = np.eye(4)
    moved[:3, 3] = (5.0, 0.0, 0.0)
    _nii(tmp_path / "images/moved.nii.gz", img)
    _nii(tmp_path / "labels/moved.nii.gz", lab, moved)  # affine mismatch
    _nii(tmp_path / "images/short.nii.gz", img)
    _nii(tmp_path / "labels/short.nii.gz", lab[:, :, :3])  # shape mismatch
    bad = np.zeros((8, 8, 4), np.float32)
    bad[0, 0, 0] = np.inf
    _nii(tmp_path / "images/inf.nii.gz", bad)
    _nii(tmp_path / "labels/inf.nii.gz", lab)
    _nii(tmp_path / "images/cut.nii.gz", img)
    _nii(tmp_path / "labels/cut.nii.gz", lab)
    raw = gzip.decompress((tmp_path / "images/cut.nii.gz").read_bytes())
    (tmp_path / "images/cut.nii.gz").write_bytes(gzip.compress(raw[: len(raw) - 100]))  # truncated data
    _nii(tmp_path / "images/blank.nii.gz", img)
    _nii(tmp_path / "labels/blank.nii.gz", np.zeros_like(lab))
    multi = lab.copy()
    multi[5, 5, 2] = 2
    _nii(tmp_path / "images/multi.nii.gz", img)
    _nii(tmp_path / "labels/multi.nii.gz", multi)

    cfg = DataConfig(kind="volume", root=str(tmp_path), labels=["labels"])
    report = check_data(cfg, find_cases(cfg))
    fatal = {(Path(i.path).parent.name, Path(i.path).name) for i in report.fatal}
    assert fatal == {
        ("labels", "moved.nii.gz"),
        ("labels", "short.nii.gz"),
        ("images", "inf.nii.gz"),
        ("images", "cut.nii.gz"),
    }
    moved_msg = _issues_for(report, "moved.nii.gz")[0].message
    assert "affine" in moved_msg and "images/moved.nii.gz" in moved_msg  # names both files
    assert {Path(i.path).name for i in report.warnings} == {"blank.nii.gz", "multi.nii.gz"}


def test_find_cases_pairs_by_stem_and_names_missing_folders(tmp_path: Path) -> None:
    _png(tmp_path / "imgs/a.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "imgs/b.jpg", np.zeros((4, 4), np.uint8))
    (tmp_path / "imgs/.DS_Store").write_bytes(b"")
    (tmp_path / "imgs/notes.txt").write_text("ignored")
    _png(tmp_path / "m1/a.png", _mask((4, 4)))
    _png(tmp_path / "m1/b.png", _mask((4, 4)))  # different suffix, same stem
    _png(tmp_path / "m2/a.tif", _mask((4, 4)))
    cfg = DataConfig(root=str(tmp_path), images="imgs", labels=["m1", "m2"], task="multilabel")
    cases = find_cases(cfg)
    assert [c.case_id for c in cases] == ["a", "b"]
    assert [p.name for p in cases[1].labels] == ["b.png", "b.jpg"]
    assert cases[1].missing_labels() == [tmp_path / "m2" / "b.jpg"]
    assert cases[0].missing_labels() == []
    with pytest.raises(DataError, match="nowhere"):
        find_cases(DataConfig(root=str(tmp_path), images="imgs", labels=["nowhere"]))
    with pytest.raises(DataError, match="noimages"):
        find_cases(DataConfig(root=str(tmp_path), images="noimages", labels=["m1"]))
    _png(tmp_path / "imgs/a.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"a\.jpg.*a\.png|a\.png.*a\.jpg"):
        find_cases(cfg)
    empty = tmp_path / "none"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    report = check_data(DataConfig(root=str(empty)), [])
    assert not report.ok and "no image files" in report.fatal[0].message


@pytest.mark.shared
def test_real_jsrt_subset(shared_dir: Path, tmp_path: Path) -> None:
    src = shared_dir / "data" / "cxr_jsrt_scr"
    names = sorted(p.name for p in (src / "images").glob("*.png"))[:3]
    assert names, f"no JSRT images under {src}"
    structures = ["lungs", "heart"]
    (tmp_path / "images").mkdir()
    for s in structures:
        (tmp_path / "masks" / s).mkdir(parents=True)
    for n in names:
        os.symlink(src / "images" / n, tmp_path / "images" / n)
        for s in structures:
            os.symlink(src / "masks" / s / n, tmp_path / "masks" / s / n)
    cfg = DataConfig(root=str(tmp_path), labels=[f"masks/{s}" for s in structures], task="multilabel", image_size=64)
    cases = find_cases(cfg)
    assert [c.case_id + ".png" for c in cases] == names
    report = check_data(cfg, cases)
    assert report.ok and not report.issues, str(report)
    s = SliceDataset(cases, cfg, train=False)[0]
    assert s["image"].shape == (3, 64, 64) and s["mask"].shape == (2, 64, 64)
    lungs, heart = s["mask"][0].mean().item(), s["mask"][1].mean().item()
    assert 0.1 < lungs < 0.6 and 0.02 < heart < 0.3


def test_a_registered_2d_format_is_checked_and_served_as_a_picture(monkeypatch, tmp_path: Path) -> None:
    """A picture format added to the registry works for the data check and the training dataset
    by what it declares (``kind: image``), with nothing keyed by ``data.kind`` to extend."""
    from s2unet.io import formats
    from s2unet.io.case import CaseFormat, CaseImage
    from s2unet.io.pictures import read_image

    class NpyPictures(CaseFormat):
        """(H, W) float arrays in 0..1, served as one-slice volumes like the built-in pictures."""

        name = "npy"
        suffixes = (".npy",)
        kind = "image"
        output_suffix = ".npy"

        def read(self, path: Path, reorient: bool, values: str) -> CaseImage:
            volume = np.ascontiguousarray(np.load(path).T[..., None])
            return CaseImage(path, nib.Nifti1Image(volume, np.eye(4)), reorient, self, values)

    monkeypatch.setattr(formats, "FORMATS", (*formats.FORMATS, NpyPictures()))
    gray = (np.random.default_rng(0).random((12, 20)) * 255).astype(np.uint8)
    _png(tmp_path / "png/images/a.png", gray)
    mask = np.zeros((12, 20), np.uint8)
    mask[3:8, 5:15] = 255
    for root in ("png", "npy"):
        _png(tmp_path / root / "masks/a.png", mask)
    (tmp_path / "npy/images").mkdir()
    np.save(tmp_path / "npy/images/a.npy", read_image(tmp_path / "png/images/a.png"))
    nan = np.full((12, 20), 0.5, np.float32)
    nan[0, 0] = np.nan
    np.save(tmp_path / "npy/images/b.npy", nan)
    _png(tmp_path / "npy/masks/b.png", mask)

    cfgs = {root: DataConfig(root=str(tmp_path / root), labels=["masks"], image_size=16) for root in ("png", "npy")}
    report = check_data(cfgs["npy"], find_cases(cfgs["npy"]))
    assert [(Path(i.path).name, i.message, i.fatal) for i in report.issues] == [("b.npy", "1 NaN/inf pixels", True)]
    samples = {root: SliceDataset(find_cases(cfg)[:1], cfg, train=True, seed=1)[0] for root, cfg in cfgs.items()}
    for key in ("image", "mask"):
        torch.testing.assert_close(samples["npy"][key], samples["png"][key], rtol=0, atol=0)


def test_label_map_masks_are_checked_as_foreground_and_dim_masks_refused(tmp_path: Path) -> None:
    img = np.full((16, 16), 100, np.uint8)
    labels = np.zeros((16, 16), np.uint8)
    labels[2:6, 2:6], labels[8:12, 8:12] = 1, 2
    _png(tmp_path / "images/lab.png", img)
    _png(tmp_path / "masks/lab.png", labels)  # 0/1/2: a label map, not an empty 8-bit mask
    _png(tmp_path / "images/dim.png", img)
    _png(tmp_path / "masks/dim.png", (labels > 0).astype(np.uint8) * 100)  # below 0.5 x 255, not labels
    cfg = DataConfig(root=str(tmp_path), labels=["masks"])
    report = check_data(cfg, find_cases(cfg))
    assert [Path(i.path).name for i in report.fatal] == ["dim.png"]
    assert "mask_threshold" in report.fatal[0].message
    lab_issues = _issues_for(report, "lab.png")
    assert [i.fatal for i in lab_issues] == [False] and "label map" in lab_issues[0].message
    assert not any("empty" in i.message for i in lab_issues)
    assert report.foreground == {"lab": [True]}


def _empty_split_data(tmp_path: Path, with_foreground: set[str]) -> DataConfig:
    for case in ("a", "b", "c"):
        _png(tmp_path / f"images/{case}.png", np.full((16, 16), 100, np.uint8))
        _png(tmp_path / f"lungs/{case}.png", _mask())
        _png(tmp_path / f"heart/{case}.png", _mask() if case in with_foreground else np.zeros((16, 16), np.uint8))
    return DataConfig(root=str(tmp_path), labels=["lungs", "heart"], task="multilabel",
                      split=SplitConfig(mode="list", train=["a", "b"], val=["c"]))


@pytest.mark.parametrize(("with_heart", "split_named"), [({"a", "b"}, "'val'"), ({"c"}, "'train'"), (set(), "'train'")])
def test_split_whose_masks_of_a_label_are_all_empty_is_refused(tmp_path: Path, with_heart: set[str], split_named: str) -> None:
    cfg = _empty_split_data(tmp_path, with_heart)
    with pytest.raises(DataError, match=f"split {split_named}: the 'heart' mask is empty in all . case") as err:
        build_datasets(cfg, seed=0)
    assert "lungs" not in str(err.value)


def test_val_cases_scored_must_hold_foreground(tmp_path: Path) -> None:
    cfg = _empty_split_data(tmp_path, {"a", "b", "c"})
    cfg.split = SplitConfig(mode="list", train=["a"], val=["b", "c"])
    _png(tmp_path / "heart/b.png", np.zeros((16, 16), np.uint8))
    assert build_datasets(cfg, seed=0).split["val"] == ["b", "c"]
    with pytest.raises(DataError, match="split 'val': the 'heart' mask is empty in all 1 case"):
        build_datasets(cfg, seed=0, val_max_cases=1)  # validation would score case b only


def test_volume_split_without_foreground_is_refused(tmp_path: Path) -> None:
    lab = np.zeros((8, 8, 4), np.uint8)
    for case, fg in (("p0", True), ("p1", False)):
        _nii(tmp_path / f"images/{case}.nii.gz", np.zeros((8, 8, 4), np.uint8))
        _nii(tmp_path / f"labels/{case}.nii.gz", lab + fg)
    cfg = DataConfig(kind="volume", root=str(tmp_path), labels=["labels"],
                     split=SplitConfig(mode="list", train=["p0"], val=["p1"]))
    with pytest.raises(DataError, match="split 'val': the 'labels' mask is empty in all 1 case"):
        build_datasets(cfg, seed=0)
