"""NIfTI geometry round-trip, windowing, 2.5D slices and the volume / image datasets."""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from s2unet.config import AugmentConfig, DataConfig, WindowConfig
from s2unet.data import (
    DataError,
    SliceDataset,
    VolumeCache,
    check_same_geometry,
    find_cases,
    load_nifti,
    prepare_slice,
    resize_to,
    save_like,
    window_to_unit,
)

# LPS-style flips plus permuted axes plus a slight obliquity, non-unit spacing: voxel axis 0
# runs towards Superior, axis 1 Posterior, axis 2 Left.
OBLIQUE_AFFINE = np.array(
    [
        [0.0, 0.05, -2.5, 100.0],
        [0.0, -0.7, 0.0, 50.0],
        [1.2, 0.0, 0.1, -30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _save(path: Path, data: np.ndarray, affine: np.ndarray = np.eye(4)) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    nib.save(img, str(path))
    return path


# ------------------------------------------------------------------------------------ geometry
def test_nifti_roundtrip_keeps_geometry_with_reorientation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 200, (5, 6, 7)).astype(np.int16)
    src = _save(tmp_path / "in.nii.gz", data, OBLIQUE_AFFINE)
    on_disk = nib.load(str(src))

    vol = load_nifti(src, reorient=True)
    assert vol.original_axcodes == ("S", "P", "L")
    assert vol.axcodes == ("L", "P", "I")  # the orientation convention
    assert vol.shape == (7, 6, 5)
    # Spacing follows its axis: disk axes (S, P, L) -> served (L, P, I) = disk axes (2, 1, 0).
    np.testing.assert_allclose(vol.zooms, np.array(on_disk.header.get_zooms())[[2, 1, 0]], rtol=1e-6)
    assert vol.zooms[0] == pytest.approx(2.5, abs=0.01) and vol.zooms[2] == pytest.approx(1.2, abs=0.01)
    served = vol.get_array()
    # nibabel's closest RAS with every axis reversed
    lpi = on_disk.as_reoriented(nib.orientations.ornt_transform(nib.io_orientation(on_disk.affine),
                                                                nib.orientations.axcodes2ornt("LPI")))
    np.testing.assert_array_equal(served, np.asanyarray(lpi.dataobj))
    np.testing.assert_array_equal(served, np.asanyarray(nib.as_closest_canonical(on_disk).dataobj)[::-1, ::-1, ::-1])
    np.testing.assert_allclose(vol.affine, lpi.affine, atol=1e-6)
    # A voxel keeps its world position when served reoriented.
    i, j, k = 2, 4, 1
    world = vol.affine @ np.array([i, j, k, 1.0])
    orig = np.rint(np.linalg.solve(on_disk.affine, world)).astype(int)[:3]
    assert data[tuple(orig)] == served[i, j, k]
    # Lazy slices equal slices of the decoded array along every axis.
    for axis in range(3):
        for s in (0, vol.shape[axis] - 1):
            np.testing.assert_array_equal(vol.get_slice(s, axis), np.take(served, s, axis=axis))

    out = save_like(served, vol, tmp_path / "out.nii.gz", np.int16)
    assert not list(tmp_path.glob("*.tmp.*"))  # atomic write left no temporary file
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)
    assert back.shape == on_disk.shape
    np.testing.assert_array_equal(back.affine, on_disk.affine)
    assert back.header.get_zooms() == on_disk.header.get_zooms()
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 2
    np.testing.assert_array_equal(back.header.get_sform(), on_disk.header.get_sform())
    np.testing.assert_allclose(back.header.get_qform(), on_disk.header.get_qform(), atol=1e-6)
    assert back.get_data_dtype() == np.int16


def test_save_like_mask_dtype_and_refusals(tmp_path: Path) -> None:
    src = _save(tmp_path / "in.nii", np.zeros((4, 5, 6), np.float32), OBLIQUE_AFFINE)
    vol = load_nifti(src, reorient=True)
    mask = np.zeros(vol.shape, bool)
    mask[1, 2, 3] = True
    out = save_like(mask, vol, tmp_path / "sub" / "mask.nii.gz", np.uint8)
    back = load_nifti(out, reorient=True)
    assert back.image.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(back.get_array(), mask.astype(np.uint8))
    with pytest.raises(DataError, match="shape"):
        save_like(np.zeros((4, 5, 6)), vol, tmp_path / "bad.nii.gz")  # original, not served, shape
    with pytest.raises(DataError, match="round"):
        save_like(np.full(vol.shape, 0.4), vol, tmp_path / "prob.nii.gz", np.uint8)


def test_no_reorientation_serves_the_disk_layout(tmp_path: Path) -> None:
    data = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    vol = load_nifti(_save(tmp_path / "a.nii.gz", data, OBLIQUE_AFFINE), reorient=False)
    assert vol.shape == (3, 4, 5)
    np.testing.assert_array_equal(vol.get_array(), data)
    np.testing.assert_array_equal(vol.affine, vol.original_affine)


def test_check_same_geometry_names_both_files(tmp_path: Path) -> None:
    a = load_nifti(_save(tmp_path / "img.nii.gz", np.zeros((3, 4, 5), np.uint8)))
    shifted = np.eye(4)
    shifted[0, 3] = 0.01
    b = load_nifti(_save(tmp_path / "lab.nii.gz", np.zeros((3, 4, 5), np.uint8), shifted))
    c = load_nifti(_save(tmp_path / "tiny.nii.gz", np.zeros((3, 4, 5), np.uint8), np.eye(4) + 1e-4 * np.eye(4)))
    check_same_geometry(a, c)  # within the 1e-3 tolerance
    with pytest.raises(DataError, match=r"img\.nii\.gz.*lab\.nii\.gz"):
        check_same_geometry(a, b)
    d = load_nifti(_save(tmp_path / "short.nii.gz", np.zeros((3, 4, 4), np.uint8)))
    with pytest.raises(DataError, match="short.nii.gz"):
        check_same_geometry(a, d)


# ----------------------------------------------------------------------------------- windowing
def test_lung_window_hand_checked() -> None:
    hu = np.array([-2000.0, -1350.0, -600.0, 150.0, 1000.0], np.float32)
    out = window_to_unit(hu, WindowConfig(preset="lung"))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    custom = window_to_unit(np.array([0.0, 50.0, 100.0]), WindowConfig(preset="custom", level=50, width=100))
    np.testing.assert_allclose(custom, [0.0, 0.5, 1.0])
    override = window_to_unit(np.array([-600.0]), WindowConfig(preset="lung", level=-600, width=10))
    np.testing.assert_allclose(override, [0.5])
    with pytest.raises(DataError):
        window_to_unit(hu, WindowConfig(preset="custom"))


def test_window_none_uses_dtype_range_or_volume_minmax() -> None:
    none = WindowConfig(preset="none")
    np.testing.assert_allclose(window_to_unit(np.array([0, 51, 255], np.uint8), none), [0.0, 0.2, 1.0])
    np.testing.assert_allclose(window_to_unit(np.array([0, 65535], np.uint16), none), [0.0, 1.0])
    f = np.array([10.0, 20.0, 30.0], np.float32)
    np.testing.assert_allclose(window_to_unit(f, none), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(window_to_unit(f, none, value_range=(0.0, 40.0)), [0.25, 0.5, 0.75])
    assert window_to_unit(f, none).dtype == np.float32


def test_window_auto_keeps_8bit_and_lung_windows_hounsfield_units() -> None:
    auto = WindowConfig(preset="auto")
    np.testing.assert_allclose(window_to_unit(np.array([0, 51, 255], np.uint8), auto), [0.0, 0.2, 1.0])
    hu = np.array([-1024, -600, 150, 900], np.int16)
    np.testing.assert_allclose(window_to_unit(hu, auto), [326 / 1500, 0.5, 1.0, 1.0], atol=1e-6)  # [-1350, 150]
    # slices of a HU volume decide by the whole volume's range, as the datasets pass it
    np.testing.assert_allclose(window_to_unit(np.array([-600, 300], np.int16), auto, value_range=(-1024, 3000)),
                               [0.5, 1.0])
    not_hu = np.array([10.0, 20.0, 30.0], np.float32)
    np.testing.assert_allclose(window_to_unit(not_hu, auto), [0.0, 0.5, 1.0])


# ------------------------------------------------------------------------------------- slices
def test_context_slices_are_neighbours_and_clamp() -> None:
    vol = np.arange(4 * 3 * 5, dtype=np.uint8).reshape(4, 3, 5) * 3
    cfg = DataConfig(kind="volume", axis=2, context_slices=True)
    expect = lambda k: vol[:, :, k].astype(np.float32) / 255.0  # noqa: E731
    mid = prepare_slice(vol, 2, cfg)
    assert mid.shape == (3, 4, 3) and mid.dtype == np.float32
    for c, k in enumerate((1, 2, 3)):
        np.testing.assert_allclose(mid[c], expect(k))
    first, last = prepare_slice(vol, 0, cfg), prepare_slice(vol, 4, cfg)
    for c, k in enumerate((0, 0, 1)):
        np.testing.assert_allclose(first[c], expect(k))
    for c, k in enumerate((3, 4, 4)):
        np.testing.assert_allclose(last[c], expect(k))
    flat = prepare_slice(vol, 2, DataConfig(kind="volume", axis=2, context_slices=False))
    for c in range(3):
        np.testing.assert_allclose(flat[c], expect(2))
    along0 = prepare_slice(vol, 3, DataConfig(kind="volume", axis=0, context_slices=True))
    np.testing.assert_allclose(along0[2], vol[3].astype(np.float32) / 255.0)  # clamped at the end


def test_prepare_slice_accepts_a_nifti_volume(tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(0, 100, (6, 5, 4)).astype(np.float32)
    vol = load_nifti(_save(tmp_path / "f.nii.gz", data, OBLIQUE_AFFINE), reorient=True)
    cfg = DataConfig(kind="volume", axis=1, context_slices=True)
    arr = vol.get_array()
    np.testing.assert_allclose(prepare_slice(vol, 0, cfg), prepare_slice(arr, 0, cfg), atol=1e-6)
    lung = DataConfig(kind="volume", axis=2, window=WindowConfig(preset="lung"))
    np.testing.assert_allclose(prepare_slice(vol, 3, lung), prepare_slice(arr, 3, lung), atol=1e-6)


def test_resize_image_bilinear_mask_nearest() -> None:
    mask = np.zeros((1, 8, 8), np.float32)
    mask[:, 2:6, 2:6] = 1
    out = resize_to(mask, 16, "nearest")
    assert out.shape == (1, 16, 16) and set(out.unique().tolist()) == {0.0, 1.0}
    assert out.sum() == 4 * mask.sum()
    labels = resize_to(np.array([[0, 2], [1, 0]], np.int64), 4, "nearest")
    assert labels.dtype == torch.int64 and labels.shape == (4, 4)
    img = resize_to(np.ones((3, 10, 12), np.float32) * 0.5, 5)
    torch.testing.assert_close(img, torch.full((3, 5, 5), 0.5))


# ----------------------------------------------------------------------------------- datasets
def _volume_set(root: Path, affine: np.ndarray = np.eye(4), n_cases: int = 2) -> DataConfig:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(2)
    for i in range(n_cases):
        img = rng.integers(0, 255, (12, 10, 6)).astype(np.uint8)
        lab = np.zeros_like(img)
        lab[3:6, 4:8, 2] = 1  # only slice 2 has a lesion (on-disk axis 2)
        _save(root / "images" / f"c{i}.nii.gz", img, affine)
        _save(root / "labels" / f"c{i}.nii.gz", lab, affine)
    return DataConfig(kind="volume", root=str(root), labels=["labels"], image_size=16, axis=2, reorient=False)


def test_volume_slice_dataset_items_masks_and_flags(tmp_path: Path) -> None:
    cfg = _volume_set(tmp_path)
    ds = SliceDataset(find_cases(cfg), cfg, train=False)
    assert len(ds) == 12 and ds.items[:2] == [("c0", 0), ("c0", 1)]
    flags = ds.lesion_flags()
    np.testing.assert_array_equal(np.flatnonzero(flags), [2, 8])
    s = ds[8]
    assert s["case"] == "c1" and s["slice"] == 2
    assert s["image"].shape == (3, 16, 16) and s["image"].dtype == torch.float32
    assert s["mask"].shape == (1, 16, 16) and s["mask"].dtype == torch.float32
    assert s["mask"].sum() > 0 and ds[7]["mask"].sum() == 0
    assert float(s["image"].min()) >= 0 and float(s["image"].max()) <= 1
    assert ds.case_items("c1") == list(range(6, 12))


def test_volume_dataset_reorients_images_and_labels_together(tmp_path: Path) -> None:
    cfg = _volume_set(tmp_path, OBLIQUE_AFFINE, n_cases=1)
    cfg.reorient = True
    ds = SliceDataset(find_cases(cfg), cfg, train=False)
    # On disk the lesion is at axis-2 index 2; that axis points Left, so served (L-P-I) it
    # becomes axis 0, not flipped: index 2.
    cfg.axis = 0
    ds0 = SliceDataset(find_cases(cfg), cfg, train=False)
    assert len(ds) == 12 and len(ds0) == 6
    np.testing.assert_array_equal(np.flatnonzero(ds0.lesion_flags()), [2])
    vol = load_nifti(find_cases(cfg)[0].image, reorient=True)
    expect = resize_to(prepare_slice(vol.get_array(), 2, cfg), 16)
    torch.testing.assert_close(ds0[2]["image"], expect)


def test_multiclass_volume_mask_is_int64(tmp_path: Path) -> None:
    cfg = _volume_set(tmp_path, n_cases=1)
    lab = np.zeros((12, 10, 6), np.uint8)
    lab[:4, :, 1] = 2
    lab[4:, :, 1] = 1
    _save(tmp_path / "labels" / "c0.nii.gz", lab)
    cfg.task, cfg.num_classes = "multiclass", 3
    s = SliceDataset(find_cases(cfg), cfg, train=False)[1]
    assert s["mask"].dtype == torch.int64 and s["mask"].shape == (16, 16)
    assert set(s["mask"].unique().tolist()) == {1, 2}


def test_volume_cache_is_bounded_lru() -> None:
    from s2unet.data.datasets import _Decoded

    cache = VolumeCache(max_bytes=250)
    loads = []

    def loader(key: str):
        return lambda: (loads.append(key), _Decoded(np.zeros(100, np.uint8), None))[1]

    for key in ("a", "b", "a", "c", "a", "b"):
        cache.get((key,), loader(key))
    assert loads == ["a", "b", "c", "b"]  # "b" was evicted by "c", "a" stayed hot
    assert cache.nbytes <= 250 and len(cache) == 2
    cache.get(("huge",), lambda: _Decoded(np.zeros(1000, np.uint8), None))
    assert len(cache) == 2  # larger than the budget: served, not kept


def _image_set(root: Path, n: int = 4) -> DataConfig:
    for sub in ("images", "masks/a", "masks/b"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 30)).astype(np.uint8)).save(root / "images" / f"x{i}.png")
        m = np.zeros((40, 30), np.uint8)
        m[5:20, 5:15] = 255
        Image.fromarray(m).save(root / "masks/a" / f"x{i}.png")
        Image.fromarray(255 - m).save(root / "masks/b" / f"x{i}.png")
    return DataConfig(kind="image", root=str(root), labels=["masks/a", "masks/b"], task="multilabel", image_size=32)


def test_image_dataset_multilabel_and_seeded_augmentation(tmp_path: Path) -> None:
    cfg = _image_set(tmp_path)
    cases = find_cases(cfg)
    ev = SliceDataset(cases, cfg, train=False)
    s = ev[0]
    assert s["image"].shape == (3, 32, 32) and s["mask"].shape == (2, 32, 32) and s["slice"] == 0
    torch.testing.assert_close(s["image"][0], s["image"][2])  # gray replicated
    torch.testing.assert_close(s["mask"][0] + s["mask"][1], torch.ones(32, 32))

    cfg.augment = AugmentConfig(affine_prob=1.0, intensity_prob=1.0, hflip=0.5, noise_std=0.01)
    tr1, tr2 = SliceDataset(cases, cfg, train=True, seed=7), SliceDataset(cases, cfg, train=True, seed=7)
    a, b = tr1[1], tr2[1]
    torch.testing.assert_close(a["image"], b["image"])
    torch.testing.assert_close(a["mask"], b["mask"])
    assert not torch.equal(a["image"], ev[1]["image"])
    assert set(a["mask"].unique().tolist()) <= {0.0, 1.0} and 0 <= a["image"].min() and a["image"].max() <= 1
    tr2.set_epoch(1)
    assert not torch.equal(tr2[1]["image"], a["image"])
    tr2.set_epoch(0)
    torch.testing.assert_close(tr2[1]["image"], a["image"])  # depends only on (seed, epoch, index)


def test_image_dataset_multiclass(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "images" / "a.png")
    lab = np.zeros((10, 10), np.uint8)
    lab[:5] = 2
    Image.fromarray(lab).save(tmp_path / "labels" / "a.png")
    cfg = DataConfig(root=str(tmp_path), labels=["labels"], task="multiclass", num_classes=3, image_size=20)
    s = SliceDataset(find_cases(cfg), cfg, train=True, seed=0)[0]
    assert s["mask"].dtype == torch.int64 and s["mask"].shape == (20, 20)
    assert set(s["mask"].unique().tolist()) <= {0, 2}


# ---------------------------------------------------------------------------------- real data
@pytest.mark.shared
def test_real_ct_volume_through_the_dataset(shared_dir: Path, tmp_path: Path) -> None:
    src = shared_dir / "data" / "ct_covid19_ma20"
    case = "case10"  # the smallest volume (11 slices)
    for sub in ("images", "masks_infection"):
        (tmp_path / sub).mkdir()
        os.symlink(src / sub / f"{case}.nii.gz", tmp_path / sub / f"{case}.nii.gz")
    cfg = DataConfig(kind="volume", root=str(tmp_path), labels=["masks_infection"], image_size=128, context_slices=True)
    ds = SliceDataset(find_cases(cfg), cfg, train=False)
    vol = load_nifti(tmp_path / "images" / f"{case}.nii.gz")
    assert vol.shape[:2] == (256, 256) and len(ds) == vol.shape[2]
    # radiopaedia cases are stored L-A-S (the corrected headers, cases.json stored_orientation)
    assert vol.original_axcodes == ("L", "A", "S")
    assert vol.axcodes == ("L", "P", "I")  # served in the orientation convention
    flags = ds.lesion_flags()
    assert flags.any()
    k = int(np.flatnonzero(flags)[0])
    s = ds[k]
    assert s["image"].shape == (3, 128, 128) and s["mask"].shape == (1, 128, 128)
    assert s["mask"].sum() > 0 and 0 < float(s["image"].mean()) < 1
