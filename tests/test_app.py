"""The labeling app without a browser: the click session shared with ``compare``, mask prompts,
object-wise click refinement, strokes, undo / redo, the training layout of saved masks (PNG and
NIfTI geometry), overwrite refusal, autosave and restore, the per-case log, bad input shown as
one message, and the access token. A stand-in predictor keeps everything fast and exact."""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from s2unet import cli
from s2unet.app import CaseEditor, build_state, create_app, layers_from, stroke_mask
from s2unet.app.server import LabelApp, serve
from s2unet.app.workspace import (
    AppError,
    AutosaveMismatch,
    CaseStats,
    OpenCase,
    WINDOWS,
    list_cases,
    read_autosave,
    save_masks,
    saved_labelled,
    write_autosave,
)
from s2unet.prompts import Click, Prompts
from s2unet.baselines.sam_predictors import MASK_PROMPT_LOGIT, PromptedPredictor, SamFrame, SamTinyViTPredictor
from s2unet.baselines.session import ClickSession
from s2unet.config import config_from_dict
from s2unet.data import read_case
from s2unet.models import create_model_from_config
from s2unet.models.checkpoint import atomic_save, model_payload
from test_case_io import _series

H = W = 64


class Painter(PromptedPredictor):
    """Stand-in for a SAM model: fills the box, then a 7 x 7 square per point (set by add
    points, cleared by remove points). Records what each call received."""

    name = "painter"

    def __init__(self) -> None:
        super().__init__()
        self.embedded = 0
        self.calls: list[dict] = []

    def _embed(self, image: np.ndarray) -> None:
        self.embedded += 1

    def _predict(self, boxes, points, labels, mask_input, multimask):
        h, w = self._hw
        k = len(boxes) if boxes is not None else len(points)
        self.calls.append({"boxes": boxes, "points": points, "mask_input": mask_input, "multimask": multimask})
        logits = np.full((k, h, w), -20.0, dtype=np.float32)
        for i in range(k):
            if boxes is not None:
                x0, y0, x1, y1 = np.round(boxes[i]).astype(int)
                logits[i, y0 : y1 + 1, x0 : x1 + 1] = 20.0
            if points is not None:
                for (x, y), lab in zip(np.round(points[i]).astype(int), labels[i]):
                    logits[i, max(0, y - 3) : y + 4, max(0, x - 3) : x + 4] = 20.0 if lab == 1 else -20.0
        return logits, np.full((k, 1, 256, 256), float(len(self.calls)), np.float32)


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        _png(folder / f"{name}.png", rng.integers(0, 255, (H, W), dtype=np.uint8))
    return folder


_OPEN: list[LabelApp] = []


@pytest.fixture(autouse=True)
def _close_states() -> None:
    """Each app holds its output folder until closed: release them after every test."""
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture
def volumes(tmp_path: Path) -> Path:
    """A folder holding one empty 8 x 6 x 5 volume, case ct1."""
    folder = tmp_path / "vols"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 6, 5), np.int16), np.eye(4)), folder / "ct1.nii.gz")
    return folder


def _state(images: Path, out: Path, **kwargs) -> LabelApp:
    state = build_state(images, out, kwargs.pop("labels", ["lungs"]), prompted=None, **kwargs)
    state.predictor = Painter()
    _OPEN.append(state)
    return state


def _restart(images: Path, out: Path, **kwargs) -> LabelApp:
    """The app stopped (closed, crashed) and started again on the same output folder."""
    while _OPEN:
        _OPEN.pop().close()
    return _state(images, out, **kwargs)


def _client(state: LabelApp, **kwargs) -> TestClient:
    """A client talking to the app as its page on this machine does (``Host: 127.0.0.1``)."""
    return TestClient(create_app(state, **kwargs), base_url="http://127.0.0.1")


def _two_blobs() -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[10:30, 5:25] = True  # "right lung"
    mask[10:30, 40:60] = True  # "left lung"
    return mask


# ------------------------------------------------------------------------------ the session
def test_click_session_embeds_once_and_feeds_back_the_last_logits() -> None:
    predictor = Painter()
    session = ClickSession(predictor, np.zeros((H, W), np.float32), key="img")
    session.start(Prompts(np.array([[5, 5, 20, 20]], np.float32), None, None, False))
    session.click(Click(30.0, 30.0, 1, False))
    session.click(Click(10.0, 10.0, 0, False))
    assert predictor.embedded == 1
    first, second, third = predictor.calls
    assert first["mask_input"] is None
    assert np.all(second["mask_input"] == 1.0) and np.all(third["mask_input"] == 2.0)  # the previous answer's logits
    assert session.prompts.points.shape == (1, 2, 2) and [c.label for c in session.clicks] == [1, 0]
    prob = session.prob >= 0.5
    assert prob[30, 30] and not prob[10, 10] and prob[18, 18]


def test_a_mask_prompt_makes_a_lone_point_unambiguous() -> None:
    predictor = Painter()
    session = ClickSession(predictor, np.zeros((H, W), np.float32))
    session.start(Prompts(None, np.array([[[5.0, 5.0]]], np.float32), np.array([[1]]), False))
    session.start(Prompts(None, np.array([[[5.0, 5.0]]], np.float32), np.array([[1]]), False), mask=_two_blobs())
    assert [c["multimask"] for c in predictor.calls] == [True, False]
    np.testing.assert_array_equal(predictor.calls[1]["mask_input"].shape, (1, 1, 256, 256))


def test_sam1_mask_prompt_follows_the_resize_and_padding_of_the_image() -> None:
    predictor = SamTinyViTPredictor.__new__(SamTinyViTPredictor)  # frame logic only, no weights
    PromptedPredictor.__init__(predictor)
    predictor._hw, predictor._frame = (100, 200), SamFrame.of((100, 200), 1024)
    mask = np.zeros((100, 200), dtype=bool)
    mask[:, :100] = True  # left half
    low = predictor.mask_prompt(mask)[0, 0]
    assert low.shape == (256, 256)
    # The image fills the top 128 rows of the 256 low-res rows (512 of 1024 input rows); the
    # padding below is background, the left half of the image foreground.
    assert low[:120, :120].min() == pytest.approx(MASK_PROMPT_LOGIT)
    assert low[:120, 136:].max() == pytest.approx(-MASK_PROMPT_LOGIT)
    assert low[136:, :].max() == pytest.approx(-MASK_PROMPT_LOGIT)


# ---------------------------------------------------------------------- editing a case
@pytest.fixture
def editor(images: Path) -> CaseEditor:
    opened = OpenCase(list_cases(images)[0])
    return CaseEditor(opened, layers_from(["lungs"]), _two_blobs()[None, None])


def test_a_click_refines_only_the_object_it_lands_on(editor: CaseEditor) -> None:
    predictor = Painter()
    before = editor.masks[0, 0].copy()
    editor.click(predictor, 0, 0, "auto", 15.0, 20.0, add=False)  # remove inside the right blob
    after = editor.masks[0, 0]
    np.testing.assert_array_equal(after[:, 32:], before[:, 32:])  # the other blob is untouched
    assert not after[20, 15] and after[12, 7]
    call = predictor.calls[-1]
    np.testing.assert_array_equal(call["boxes"], [[5, 10, 24, 29]])  # the blob's box ...
    assert call["mask_input"] is not None and not call["multimask"]  # ... and the blob as mask prompt
    # The next click continues the same object: one more point, the model's own logits.
    editor.click(predictor, 0, 0, "auto", 7.0, 27.0, add=False)
    assert predictor.calls[-1]["points"].shape == (1, 2, 2) and np.all(predictor.calls[-1]["mask_input"] == 1.0)
    assert not editor.masks[0, 0, 27, 7] and not editor.masks[0, 0, 20, 15]


class Flooder(Painter):
    """Stand-in for SAM flooding: one object's add points give the rectangle around all of them
    (grown by 3 pixels), as SAM fills the chest between two lungs prompted as one object."""

    def _predict(self, boxes, points, labels, mask_input, multimask):
        logits, low_res = super()._predict(boxes, points, labels, mask_input, multimask)
        if boxes is None:
            for i in range(len(points)):
                added = np.round(points[i][labels[i] == 1]).astype(int)
                (x0, y0), (x1, y1) = added.min(0), added.max(0)
                logits[i, max(0, y0 - 3) : y1 + 4, max(0, x0 - 3) : x1 + 4] = 20.0
        return logits, low_res


def test_an_add_click_off_every_object_starts_a_new_one_alone(images: Path) -> None:
    """Issue 26: a second add click on the other lung was added to the first lung's prompts, and
    the answer flooded the chest between them."""
    editor = CaseEditor(OpenCase(list_cases(images)[0]), layers_from(["lungs"]))
    predictor = Flooder()
    editor.click(predictor, 0, 0, "auto", 10.0, 20.0, add=True)  # the right lung
    first = editor.masks[0, 0].copy()
    assert first[17:24, 7:14].all() and first.sum() == 49
    editor.click(predictor, 0, 0, "auto", 50.0, 20.0, add=True)  # the left lung: a new object
    call = predictor.calls[-1]
    assert call["boxes"] is None and call["points"].shape == (1, 1, 2) and call["mask_input"] is None
    second = editor.masks[0, 0]
    np.testing.assert_array_equal(second & first, first)  # the first object's pixels stay
    assert second[17:24, 47:54].all() and second.sum() == 98 and not second[20, 30]  # no flood
    # A click on the first object refines it alone (its box, the click, itself as mask prompt).
    editor.click(predictor, 0, 0, "auto", 10.0, 20.0, add=False)
    np.testing.assert_array_equal(predictor.calls[-1]["boxes"], [[7, 17, 13, 23]])
    np.testing.assert_array_equal(editor.masks[0, 0, :, 32:], second[:, 32:])  # the second one untouched
    assert not editor.masks[0, 0, 20, 10]


def test_an_add_click_next_to_an_object_leaves_its_pixels_as_they_are(editor: CaseEditor) -> None:
    predictor = Painter()
    before = editor.masks[0, 0].copy()
    editor.click(predictor, 0, 0, "auto", 27.0, 20.0, add=True)  # just right of the right blob
    assert predictor.calls[-1]["boxes"] is None and predictor.calls[-1]["mask_input"] is None
    expected = before.copy()
    expected[17:24, 24:31] = True  # the click's own answer, added to the mask
    np.testing.assert_array_equal(editor.masks[0, 0], expected)


def test_a_remove_click_off_the_mask_changes_nothing(editor: CaseEditor) -> None:
    before = editor.masks.copy()
    note = editor.click(Painter(), 0, 0, "auto", 32.0, 50.0, add=False)
    assert "nothing to remove" in note and not editor.can_undo
    np.testing.assert_array_equal(editor.masks, before)


def test_strokes_paint_and_erase_and_undo_redo_are_exact(editor: CaseEditor) -> None:
    start = editor.masks.copy()
    editor.stroke(0, 0, [(2.0, 40.0), (20.0, 40.0)], 2.0, erase=False)
    painted = editor.masks.copy()
    assert painted[0, 0, 40, 2:21].all() and not painted[0, 0, 44, 10]
    editor.stroke(0, 0, [(15.0, 12.0)], 3.0, erase=True)
    assert not editor.masks[0, 0, 12, 15] and editor.masks[0, 0, 20, 15]
    assert editor.undo()
    np.testing.assert_array_equal(editor.masks, painted)
    assert editor.undo() and not editor.undo()
    np.testing.assert_array_equal(editor.masks, start)
    assert editor.redo() and editor.redo() and not editor.redo()
    assert editor.stats.strokes == 2


def test_stroke_mask_is_a_round_brush_along_the_line() -> None:
    dab = stroke_mask((20, 20), [(10.0, 10.0)], 3.0)
    assert dab[10, 10] and dab[10, 13] and not dab[10, 14] and not dab[13, 13]
    line = stroke_mask((20, 40), [(5.0, 10.0), (30.0, 10.0)], 2.0)
    assert line[10, 5:31].all() and line[8, 15] and not line[13, 15]


# --------------------------------------------------------------------------- files
def test_saved_pngs_follow_the_training_layout_and_are_never_overwritten_silently(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    opened = OpenCase(list_cases(images)[0])
    layers = layers_from(["lungs", "heart"])
    masks = np.zeros((2, 1, H, W), dtype=bool)
    masks[0, 0, 5:10, 5:10] = True
    files = save_masks(out, layers, opened, masks, np.ones(1, bool), overwrite=False)
    assert files == [out / "masks/lungs/a.png", out / "masks/heart/a.png"]
    saved = np.asarray(Image.open(files[0]))
    assert saved.dtype == np.uint8 and saved.sum() == 25 * 255 and saved[7, 7] == 255
    assert (out / "images" / "a.png").read_bytes() == (images / "a.png").read_bytes()
    with pytest.raises(FileExistsError, match="masks/lungs/a.png"):
        save_masks(out, layers, opened, np.zeros_like(masks), np.ones(1, bool), overwrite=False)
    assert np.asarray(Image.open(files[0])).sum() == 25 * 255  # untouched
    save_masks(out, layers, opened, np.zeros_like(masks), np.ones(1, bool), overwrite=True)
    assert np.asarray(Image.open(files[0])).sum() == 0
    assert not (out / "labelled_slices.json").exists()  # an image is labelled whole


def test_hu_window_presets_are_offered_only_on_hu_data(tmp_path: Path) -> None:
    """A lung window on 8-bit data turned the slice white (issue 26): only HU data gets the presets."""
    folder = tmp_path / "vols"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.full((8, 6, 5), 200, np.uint8), np.eye(4)), folder / "clahe.nii.gz")
    hu = np.zeros((8, 6, 5), np.int16)
    hu[0] = -1000  # air
    nib.save(nib.Nifti1Image(hu, np.eye(4)), folder / "ct.nii.gz")
    _png(folder / "xray.png", np.zeros((H, W), np.uint8))
    client = _client(_state(folder, tmp_path / "out"))
    offered = {case: client.post("/api/open", json={"case": case}).json()["windows"] for case in ("clahe", "ct", "xray")}
    assert offered == {"clahe": ["auto", "none"], "ct": list(WINDOWS), "xray": []}
    assert "lung" in WINDOWS
    assert client.get("/api/image", params={"case": "ct", "plane": 0, "window": "lung"}).status_code == 200
    r = client.get("/api/image", params={"case": "clahe", "plane": 0, "window": "lung"})
    assert r.status_code == 422 and "clahe: window 'lung' is a HU preset" in r.json()["detail"]


def test_volume_masks_keep_the_source_geometry_and_the_slice_orientation(tmp_path: Path) -> None:
    data = np.arange(8 * 6 * 4, dtype=np.int16).reshape(8, 6, 4) - 1000  # HU-like
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    src = tmp_path / "vols" / "ct1.nii.gz"
    src.parent.mkdir()
    nib.save(nib.Nifti1Image(data, affine), src)
    opened = OpenCase(list_cases(src.parent)[0])
    assert opened.n_slices == 4 and opened.plane_shape == (6, 8)
    # Stored R-A-S, served L-P-I (the orientation convention): every axis reversed, so slice k
    # shows data[::-1, ::-1, 3 - k].T (anterior at the top, the patient's right on the left).
    np.testing.assert_allclose(opened.plane(2, "none"), ((data[::-1, ::-1, 1] + 1000) / 191.0).T, atol=1e-6)
    assert opened.plane(2, "lung").max() <= 1.0
    masks = np.zeros((1, 4, 6, 8), dtype=bool)
    masks[0, 2, 1, 5] = True  # display row 1, column 5 of slice 2
    labelled = np.array([False, True, True, False])
    path = save_masks(tmp_path / "out", layers_from(["lesion"]), opened, masks, labelled, overwrite=False)[0]
    saved = nib.load(path)
    np.testing.assert_allclose(saved.affine, affine)
    arr = np.asarray(saved.dataobj)
    assert arr.dtype == np.uint8 and arr.shape == data.shape
    assert arr.sum() == 1 and arr[8 - 1 - 5, 6 - 1 - 1, 4 - 1 - 2] == 1
    manifest = json.loads((tmp_path / "out" / "labelled_slices.json").read_text())
    assert manifest == {"axis": 2, "reorient": True, "orientation": "radiological-v1", "cases": {"ct1": [1, 2]}}
    np.testing.assert_array_equal(saved_labelled(tmp_path / "out", opened), labelled)  # reopened as saved


def test_a_volume_with_no_slice_marked_labelled_is_not_saved(tmp_path: Path) -> None:
    src = tmp_path / "vols" / "ct1.nii.gz"
    src.parent.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 6, 4), np.int16), np.eye(4)), src)
    opened = OpenCase(list_cases(src.parent)[0])
    with pytest.raises(AppError, match="no slice is marked labelled"):
        save_masks(tmp_path / "out", layers_from(["lesion"]), opened, np.ones((1, 4, 6, 8), bool),
                   np.zeros(4, bool), overwrite=False)
    assert not (tmp_path / "out" / "masks").exists()


def test_strokes_and_marks_set_the_labelled_slices_and_drafts_do_not(volumes: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    client = _client(_state(volumes, out, labels=["lesion"]))
    client.post("/api/open", json={"case": "ct1"})
    st = client.post("/api/stroke", json={"case": "ct1", "plane": 3, "points": [[2.0, 2.0]], "radius": 1}).json()
    assert st["labelled"] and st["n_labelled"] == 1
    st = client.post("/api/mark", json={"case": "ct1", "plane": 0, "labelled": True}).json()
    assert st["labelled"] and st["n_labelled"] == 2
    client.post("/api/mark", json={"case": "ct1", "plane": 0, "labelled": False})
    client.post("/api/mark", json={"case": "ct1", "plane": 1, "labelled": True})
    assert client.post("/api/plane", json={"case": "ct1", "plane": 4}).json()["labelled"] is False
    restarted = _client(_restart(volumes, out, labels=["lesion"]))  # from the autosave
    st = restarted.post("/api/open", json={"case": "ct1", "plane": 1}).json()
    assert st["labelled"] and st["n_labelled"] == 2
    record = restarted.post("/api/save", json={"case": "ct1"}).json()["record"]
    assert record["labelled_slices"] == [1, 3]
    st = restarted.post("/api/mark", json={"case": "ct1", "plane": 0, "labelled": True, "all_slices": True}).json()
    assert st["n_labelled"] == 5


def test_a_dicom_series_folder_is_a_case_opened_and_saved_with_the_series_geometry(images: Path,
                                                                                   tmp_path: Path) -> None:
    series = _series(images / "ct01", n=3)  # 6 rows x 8 columns; pixel (row 0, column 0) marked in each slice
    (images / "notes").mkdir()
    (images / "notes" / "readme.txt").write_text("a folder that holds no series is no case")
    assert [c.case_id for c in list_cases(series)] == ["ct01"]  # --images may name the series itself
    out = tmp_path / "out"
    client = _client(_state(images, out, labels=["lesion"]))
    cases = {c["id"]: c for c in client.get("/api/info").json()["cases"]}
    assert set(cases) == {"a", "b", "ct01"} and cases["ct01"]["kind"] == "volume"
    opened = client.post("/api/open", json={"case": "ct01"}).json()
    assert (opened["n_slices"], opened["height"], opened["width"]) == (3, 6, 8)

    shown = [np.asarray(Image.open(io.BytesIO(client.get("/api/image", params={"case": "ct01", "plane": p,
                                                                               "window": "none"}).content)))
             for p in range(3)]
    y, x = np.unravel_index(np.argmin(shown[2]), shown[2].shape)  # the marked pixel as displayed
    slice_shown = sorted(range(3), key=lambda p: shown[p][3, 3]).index(2)  # slice k holds 100 k - 1024 HU
    edited = client.post("/api/stroke", json={"case": "ct01", "plane": 2, "points": [[float(x), float(y)]],
                                              "radius": 0.5}).json()["masks"]
    saved = client.post("/api/save", json={"case": "ct01"}).json()["saved"]
    assert saved == [str(out / "masks" / "lesion" / "ct01.nii.gz")]

    written = nib.load(saved[0])
    source = read_case(series, reorient=False)  # the series as stored: column, row, slice by position
    np.testing.assert_allclose(written.affine, source.original_affine)
    mask = np.asarray(written.dataobj)
    assert mask.shape == (8, 6, 3) and mask.dtype == np.uint8
    # the dab on the marked pixel lands on the marked voxel of the slice shown, its neighbours beside it
    assert mask[0, 0, slice_shown] and mask[:2, :2, slice_shown].sum() == mask.sum()
    assert read_case(out / "images" / "ct01").shape == read_case(series).shape  # the series copied for training

    reopened = _client(_restart(images, out, labels=["lesion"]))
    again = reopened.post("/api/open", json={"case": "ct01", "plane": 2}).json()
    assert again["note"] == "restored from the saved masks" and again["masks"] == edited


def test_autosave_restores_masks_draft_and_counters(images: Path, tmp_path: Path) -> None:
    case = list_cases(images)[0]
    masks = np.zeros((1, 1, H, W), dtype=bool)
    masks[0, 0, 3, 4] = True
    write_autosave(tmp_path, case, masks, np.ones(1, bool), masks, np.ones((1, 1), bool), "ckpt.pt",
                   CaseStats(12.5, 3, 2, 1), ["lungs"], "digest")
    got = read_autosave(tmp_path, case, masks.shape, ["lungs"], "digest")
    np.testing.assert_array_equal(got.masks, masks)
    np.testing.assert_array_equal(got.labelled, [True])
    np.testing.assert_array_equal(got.draft, masks)
    assert (got.draft_source, got.stats.clicks, got.stats.strokes, got.stats.seconds) == ("ckpt.pt", 3, 2, 12.5)
    with pytest.raises(AutosaveMismatch, match=r"made for labels \[lungs\], this app labels \[heart\]"):
        read_autosave(tmp_path, case, masks.shape, ["heart"], "digest")  # another layer set: not restored
    with pytest.raises(AutosaveMismatch, match="made from another image than"):
        read_autosave(tmp_path, case, masks.shape, ["lungs"], "other")


def test_idle_time_is_capped_in_the_labeling_seconds() -> None:
    stats = CaseStats()
    stats.restart_clock(now=0.0)
    stats.tick(now=5.0)
    stats.tick(now=5.0 + 3600.0)  # an hour away counts as the cap
    assert stats.seconds == pytest.approx(5.0 + CaseStats.IDLE_CAP)


# -------------------------------------------------------------------------- the server
def test_edits_are_autosaved_and_restored_after_a_restart(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    client = _client(_state(images, out))
    assert client.post("/api/open", json={"case": "a"}).status_code == 200
    r = client.post("/api/stroke", json={"case": "a", "points": [[10, 10], [20, 10]], "radius": 2})
    assert r.status_code == 200 and r.json()["stats"]["strokes"] == 1
    # The server is gone (closed tab, crash); a new one finds the work.
    client = _client(_restart(images, out))
    r = client.post("/api/open", json={"case": "a"}).json()
    assert "restored from the autosave" in r["note"] and r["stats"]["strokes"] == 1
    mask = np.asarray(Image.open(__import__("io").BytesIO(__import__("base64").b64decode(r["masks"][0]))))
    assert mask[10, 10:21].all()
    saved = client.post("/api/save", json={"case": "a"}).json()
    assert saved["saved"] == [str(out / "masks/lungs/a.png")]
    assert not (out / ".autosave" / "a.npz").exists()
    assert client.post("/api/save", json={"case": "a"}).status_code == 409  # no silent overwrite


def test_an_unreadable_image_is_one_message_and_the_other_cases_still_open(images: Path, tmp_path: Path) -> None:
    (images / "broken.png").write_bytes(b"not a png")
    client = _client(_state(images, tmp_path / "out"))
    r = client.post("/api/open", json={"case": "broken"})
    assert r.status_code == 422 and "broken.png" in r.json()["detail"] and "cannot read image" in r.json()["detail"]
    assert client.post("/api/open", json={"case": "a"}).status_code == 200


def test_an_unwritable_output_folder_is_reported_and_the_edits_are_kept(images: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    state = _state(images, blocker / "out")
    assert any("cannot be written" in p for p in state.problems)
    client = _client(state)
    r = client.post("/api/open", json={"case": "a"})
    assert r.status_code == 200 and "autosave" in r.json()["note"]
    client.post("/api/stroke", json={"case": "a", "points": [[5, 5]], "radius": 2})
    r = client.post("/api/save", json={"case": "a"})
    assert r.status_code == 422 and "cannot save a" in r.json()["detail"]
    assert state.editors["a"].masks[0, 0, 5, 5]  # still there, to save elsewhere once fixed


def _unet_checkpoint(path: Path, kind: str, labels: list[str]) -> Path:
    cfg = config_from_dict({"data": {"kind": kind, "labels": labels, "image_size": 64,
                                     "task": "multilabel" if len(labels) > 1 else "binary"},
                            "model": {"arch": "unet"}, "seed": 0})
    atomic_save(model_payload(create_model_from_config(cfg), cfg, 0.5, {}), path)
    return path


def test_a_checkpoint_of_another_task_is_refused_with_the_reason(images: Path, tmp_path: Path) -> None:
    ckpt = _unet_checkpoint(tmp_path / "heart.pt", "image", ["masks/heart"])
    state = _state(images, tmp_path / "out", checkpoint=ckpt)
    assert state.drafter is None and any("predicts ['heart']" in p and "['lungs']" in p for p in state.problems)
    client = _client(state)
    r = client.post("/api/draft", json={"case": "a"})
    assert r.status_code == 422 and "predicts ['heart']" in r.json()["detail"]
    volumes = _unet_checkpoint(tmp_path / "ct.pt", "volume", ["masks/lungs"])
    client = _client(_restart(images, tmp_path / "out", checkpoint=volumes))
    r = client.post("/api/draft", json={"case": "a"})
    assert r.status_code == 422 and "trained on volumes" in r.json()["detail"]


def test_the_log_has_time_counts_and_the_dice_between_draft_and_saved_mask(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ckpt = _unet_checkpoint(tmp_path / "lungs.pt", "image", ["masks/lungs"])
    state = _state(images, out, labels=None, checkpoint=ckpt)  # layers named after the checkpoint
    assert [layer.name for layer in state.layers] == ["lungs"] and state.problems == []
    client = _client(state)
    client.post("/api/open", json={"case": "a"})
    assert client.post("/api/draft", json={"case": "a"}).status_code == 200
    draft = state.editors["a"].masks[0, 0].copy()
    client.post("/api/stroke", json={"case": "a", "points": [[1, 1], [60, 60]], "radius": 4,
                                     "erase": bool(draft[30, 30])})
    client.post("/api/save", json={"case": "a"})
    record = json.loads((out / "label_log.jsonl").read_text().splitlines()[-1])
    saved = np.asarray(Image.open(out / "masks/lungs/a.png")) > 0
    expected = 2 * (saved & draft).sum() / (saved.sum() + draft.sum())
    assert record["dice_draft_vs_saved"]["lungs"] == pytest.approx(expected, abs=1e-4) and expected < 1
    assert (record["strokes"], record["clicks"], record["draft"]) == (1, 0, str(ckpt))


def test_the_log_compares_no_box_answer_with_itself(images: Path, tmp_path: Path) -> None:
    """A box's answer is the user's edit, not a model draft: saved as it is, it logged Dice 1.0."""
    out = tmp_path / "out"
    client = _client(_state(images, out))
    client.post("/api/open", json={"case": "a"})
    assert client.post("/api/box", json={"case": "a", "box": [5, 5, 30, 30]}).status_code == 200
    client.post("/api/save", json={"case": "a"})
    record = json.loads((out / "label_log.jsonl").read_text().splitlines()[-1])
    assert (record["boxes"], record["draft"], record["dice_draft_vs_saved"]) == (1, None, {"lungs": None})


def test_a_token_guards_every_request_when_set(images: Path, tmp_path: Path) -> None:
    client = _client(_state(images, tmp_path / "out"), token="s3cret")
    assert client.get("/api/info").status_code == 401
    assert client.get("/api/info", headers={"X-Token": "wrong"}).status_code == 401
    assert client.get("/?token=s3cret").status_code == 200
    assert client.get("/api/info").status_code == 200  # the cookie set by the first visit


def test_binding_beyond_loopback_needs_an_explicit_flag(images: Path, tmp_path: Path) -> None:
    with pytest.raises(AppError, match="--allow-remote"):
        serve(_state(images, tmp_path / "out"), host="0.0.0.0")


def test_cli_reports_a_missing_image_folder_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["label", "--images", str(tmp_path / "nope"), "--prompted", "none"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: --images {tmp_path / 'nope'} does not exist"


def test_saved_masks_train_as_they_are(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    client = _client(_state(images, out))
    for case in ("a", "b"):
        client.post("/api/open", json={"case": case})
        client.post("/api/stroke", json={"case": case, "points": [[20, 20], [40, 40]], "radius": 6})
        assert client.post("/api/save", json={"case": case}).status_code == 200
    config = Path(__file__).resolve().parents[1] / "configs" / "cxr_lung.yaml"
    code = cli.main(["--config", str(config), "--set", f"data.root={out}", "--set", "model.arch=unet",
                     "--set", "data.split.val_ratio=0.5", "--set", "data.split.test_ratio=0.0", "--check-only"],
                    command="train")
    assert code == 0 and "config and data OK: 2 cases" in capsys.readouterr().out


# ------------------------------------------------------------------- the output folder kept true
def _other_images(tmp_path: Path, name: str = "images2") -> Path:
    """A second --images folder holding an image named like the fixture's, of other content."""
    folder = tmp_path / name
    _png(folder / "a.png", np.full((H, W), 7, dtype=np.uint8))
    return folder


def test_a_same_named_image_from_another_folder_is_refused_naming_both(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    client = _client(_state(images, out))
    client.post("/api/open", json={"case": "a"})
    client.post("/api/stroke", json={"case": "a", "points": [[5, 5]], "radius": 2})
    assert client.post("/api/save", json={"case": "a"}).status_code == 200
    saved = (out / "masks/lungs/a.png").read_bytes()
    other = _other_images(tmp_path)
    client = _client(_restart(other, out))
    r = client.post("/api/open", json={"case": "a"})  # it would show the other image's mask
    assert r.status_code == 422
    assert str(images / "a.png") in r.json()["detail"] and str(other / "a.png") in r.json()["detail"]
    with pytest.raises(AppError, match="same name but other content"):
        save_masks(out, layers_from(["lungs"]), OpenCase(list_cases(other)[0]), np.ones((1, 1, H, W), bool),
                   np.ones(1, bool), overwrite=True)
    assert (out / "masks/lungs/a.png").read_bytes() == saved
    assert (out / "images/a.png").read_bytes() == (images / "a.png").read_bytes()
    # The same image again, from wherever it is read, is the same case.
    shutil.copytree(images, tmp_path / "copy")
    assert _client(_restart(tmp_path / "copy", out)).post("/api/open", json={"case": "a"}).status_code == 200


def test_a_failed_save_leaves_the_manifest_unchanged(volumes: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    client = _client(_state(volumes, out, labels=["lesion"]))
    client.post("/api/open", json={"case": "ct1"})
    client.post("/api/stroke", json={"case": "ct1", "plane": 1, "points": [[2.0, 2.0]], "radius": 1})
    assert client.post("/api/save", json={"case": "ct1"}).status_code == 200
    manifest = (out / "labelled_slices.json").read_bytes()
    shutil.rmtree(out / "masks" / "lesion")
    (out / "masks" / "lesion").write_text("a file where the mask folder was: no mask can be written")
    client.post("/api/stroke", json={"case": "ct1", "plane": 3, "points": [[2.0, 2.0]], "radius": 1})
    r = client.post("/api/save", json={"case": "ct1", "overwrite": True})
    assert r.status_code == 422 and "cannot save ct1" in r.json()["detail"]
    assert (out / "labelled_slices.json").read_bytes() == manifest  # still [1], not [1, 3]
    assert not [p for p in out.rglob(".tmp*")]  # no staged mask left behind


def test_one_app_per_output_folder_and_one_label_set(images: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    _state(images, out)
    with pytest.raises(AppError, match=rf"output folder {out} .* is in use by process {os.getpid()}"):
        build_state(images, out, ["lungs"], prompted=None)
    with pytest.raises(SystemExit) as exc:
        cli.main(["label", "--images", str(images), "--out", str(out), "--labels", "lungs", "--prompted", "none"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: output folder {out}") and "\n" not in err
    with pytest.raises(AppError, match=r"holds labels lungs \(masks/lungs\).* not lungs \(masks/lungs\), heart"):
        _restart(images, out, labels=["lungs", "heart"])
    assert json.loads((out / "label_app.json").read_text())["labels"] == [{"name": "lungs", "folder": "masks/lungs"}]


def test_an_autosave_of_other_labels_is_kept_aside_and_said_so(images: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    client = _client(_state(images, out))
    client.post("/api/open", json={"case": "a"})
    client.post("/api/stroke", json={"case": "a", "points": [[5, 5]], "radius": 2})  # unsaved work
    work = (out / ".autosave" / "a.npz").read_bytes()
    (out / "label_app.json").unlink()  # a folder from before the label set was recorded
    state = _restart(images, out, labels=["lungs", "heart"])
    kept = list((out / "autosave_kept").glob("a.*.npz"))
    assert len(kept) == 1 and kept[0].read_bytes() == work and not (out / ".autosave" / "a.npz").exists()
    note = next(p for p in state.problems if "autosave of a" in p)
    assert "labels [lungs], this app labels [lungs, heart]" in note and str(kept[0]) in note and "--labels" not in note
    assert "move the file to that output's .autosave/a.npz" in note
    client = _client(state)
    assert note in client.get("/api/info").json()["problems"]
    client.post("/api/stroke", json={"case": "a", "points": [[9, 9]], "radius": 2})  # the next edit ...
    assert kept[0].read_bytes() == work  # ... overwrites nothing


def test_an_autosave_of_another_image_is_kept_aside_when_the_case_opens(images: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    client = _client(_state(images, out))
    client.post("/api/open", json={"case": "a"})
    client.post("/api/stroke", json={"case": "a", "points": [[5, 5]], "radius": 2})
    work = (out / ".autosave" / "a.npz").read_bytes()
    client = _client(_restart(_other_images(tmp_path), out))
    r = client.post("/api/open", json={"case": "a"}).json()
    kept = next((out / "autosave_kept").glob("a.*.npz"))
    assert "made from another image" in r["note"] and str(kept) in r["note"] and kept.read_bytes() == work
    assert str(kept) in capsys.readouterr().out  # and on the console
    assert r["stats"]["strokes"] == 0  # opened afresh


def test_a_killed_apps_temporaries_are_removed_at_start(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [out / f".tmp{dead.stdout.strip()}.label_app.json", out / "masks/lungs" / f".tmp{dead.stdout.strip()}.a.png"]
    live = out / "masks/lungs" / f".tmp{os.getpid()}.b.png"  # a process still writing it
    for path in (*stale, live):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    _state(images, out)
    assert not any(p.exists() for p in stale) and live.exists()


# ------------------------------------------------------------------------------ who is let in
def test_only_loopback_host_names_are_answered(images: Path, tmp_path: Path) -> None:
    state = _state(images, tmp_path / "out")
    app = create_app(state, port=8765)
    for host in ("localhost:8765", "127.0.0.1:8765", "[::1]:8765"):
        assert TestClient(app, base_url=f"http://{host}").get("/api/info").status_code == 200
    for host in ("evil.example.com:8765", "127.0.0.1:9999", "localhost.evil.example.com:8765"):
        r = TestClient(app, base_url=f"http://{host}").get("/api/info")
        assert r.status_code == 403 and "refused" in r.json()["detail"] and "cases" not in r.json()
    remote = TestClient(create_app(state, token="t", port=8765, allow_remote=True), base_url="http://lab.example:8765")
    assert remote.get("/api/info", headers={"X-Token": "t"}).status_code == 200


def test_edits_from_another_origin_are_refused(images: Path, tmp_path: Path) -> None:
    state = _state(images, tmp_path / "out")
    client = _client(state)
    stroke = {"case": "a", "points": [[5, 5]], "radius": 2}
    r = client.post("/api/stroke", json=stroke, headers={"Origin": "http://evil.example.com"})
    assert r.status_code == 403 and "origin" in r.json()["detail"] and "a" not in state.editors
    assert client.post("/api/stroke", json=stroke, headers={"Origin": "http://127.0.0.1"}).status_code == 200
    assert client.get("/api/info", headers={"Origin": "http://evil.example.com"}).status_code == 200  # reads no state


def test_a_non_ascii_token_is_refused_not_a_crash(images: Path, tmp_path: Path) -> None:
    client = _client(_state(images, tmp_path / "out"), token="s3cret")
    assert client.get("/api/info", params={"token": "sécret"}).status_code == 401
    assert client.get("/api/info", headers={"X-Token": "sécret".encode("latin-1")}).status_code == 401


def _raw(client: TestClient, path: str, body: str) -> "object":
    return client.post(path, content=body.encode(), headers={"Content-Type": "application/json"})


def test_oversized_requests_are_refused_with_the_limit(images: Path, tmp_path: Path) -> None:
    state = _state(images, tmp_path / "out")
    client = _client(state)
    client.post("/api/open", json={"case": "a"})
    r = _raw(client, "/api/stroke", json.dumps({"case": "a", "points": [[1, 1]] * 300_000}))
    assert r.status_code == 413 and "larger than 1048576 bytes" in r.json()["detail"]
    r = client.post("/api/stroke", json={"case": "a", "points": [[1, 1]] * 6000})
    assert r.status_code == 422 and "points" in r.json()["detail"] and "5000" in r.json()["detail"]
    r = client.post("/api/stroke", json={"case": "a", "points": [[1e9, 1]]})
    assert r.status_code == 422 and "points.0.0" in r.json()["detail"]
    assert state.editors["a"].stats.strokes == 0 and not state.editors["a"].masks.any()


def test_non_finite_coordinates_are_refused_and_mark_nothing(volumes: Path, tmp_path: Path) -> None:
    state = _state(volumes, tmp_path / "out", labels=["lesion"])
    client = _client(state)
    client.post("/api/open", json={"case": "ct1"})
    for path, body in [("/api/stroke", '{"case": "ct1", "plane": 2, "points": [[NaN, 1.0]]}'),
                       ("/api/stroke", '{"case": "ct1", "plane": 2, "points": [[1.0, 1.0]], "radius": Infinity}'),
                       ("/api/box", '{"case": "ct1", "plane": 2, "box": [0, 0, Infinity, 4]}'),
                       ("/api/click", '{"case": "ct1", "plane": 2, "x": NaN, "y": 1}')]:
        r = _raw(client, path, body)
        assert r.status_code == 422 and "finite number" in r.json()["detail"], (path, r.text)
    assert not state.editors["ct1"].labelled.any() and not math.isnan(state.editors["ct1"].stats.seconds)


# ------------------------------------------------------------------------------------- start
def test_a_bad_or_busy_port_is_one_line_before_the_address(images: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    state = _state(images, tmp_path / "out")
    with pytest.raises(AppError, match=r"^--port 70000 is outside 1\.\.65535$"):
        serve(state, port=70000)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(AppError, match=f"cannot listen on 127.0.0.1:{port} .*choose another --port"):
            serve(state, port=port)
    assert "open http" not in capsys.readouterr().out
