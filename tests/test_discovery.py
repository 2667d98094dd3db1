"""One function finds cases (s2unet.io.discovery): the training data, infer and the label app
list a folder the same way."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from s2unet.app.workspace import list_cases
from s2unet.data.cases import index_folder
from s2unet.io import DataError
from s2unet.io.discovery import case_id, discover_cases


def _picture(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)


def _volume(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.int16), np.eye(4)), path)


def test_a_folder_gives_its_cases_by_id_ignoring_other_files(tmp_path: Path) -> None:
    _picture(tmp_path / "b.png")
    _volume(tmp_path / "a.nii.gz")
    (tmp_path / "notes.txt").write_text("not a case")
    _picture(tmp_path / "._b.png")  # macOS metadata, never a case
    every = discover_cases(tmp_path)
    assert [(c.case_id, c.path.name, c.kind) for c in every] == [("a", "a.nii.gz", "volume"), ("b", "b.png", "image")]
    assert [c.case_id for c in discover_cases(tmp_path, "image")] == ["b"]
    assert [c.case_id for c in discover_cases(tmp_path / "a.nii.gz")] == ["a"]  # a case is its own source
    assert discover_cases(tmp_path / "notes.txt") == []
    # The training data, infer's inputs and the label app agree.
    assert index_folder(tmp_path, "volume") == {"a": tmp_path / "a.nii.gz"}
    assert [c.case_id for c in list_cases(tmp_path)] == ["a", "b"]


def test_two_files_of_one_case_are_refused_or_collected(tmp_path: Path) -> None:
    _picture(tmp_path / "a.png")
    _picture(tmp_path / "a.jpg")
    with pytest.raises(DataError, match=r"a.jpg and .*a.png have the same case id 'a'; keep one per case$"):
        discover_cases(tmp_path)
    problems: list[str] = []
    assert [c.path.name for c in discover_cases(tmp_path, problems=problems)] == ["a.png"]
    assert len(problems) == 1 and "same case id 'a'" in problems[0]
    with pytest.raises(DataError, match=r"nope does not exist$"):
        discover_cases(tmp_path / "nope")


def test_nnunet_images_are_named_by_their_case_unless_asked_not_to(tmp_path: Path) -> None:
    images = tmp_path / "imagesTr"
    _volume(images / "case04_0000.nii.gz")
    assert case_id(images / "case04_0000.nii.gz") == "case04"
    assert [c.case_id for c in discover_cases(images)] == ["case04"]
    assert [c.case_id for c in discover_cases(images, nnunet=False)] == ["case04_0000"]  # the label app's names
    _volume(images / "case05_0001.nii.gz")
    problems: list[str] = []
    assert [c.case_id for c in discover_cases(images, problems=problems)] == ["case04"]
    assert problems == [f"{images / 'case05_0001.nii.gz'}: channel 0001: s2unet reads one channel per case "
                        "(<case>_0000); multi-channel nnU-Net datasets are not supported"]
