"""The Python API (s2unet.load / Segmenter / Prediction), the model zoo registry, and
docs/python_api.md, whose python blocks run here against tiny checkpoints."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import s2unet
from s2unet.cli import main
from s2unet.config import config_from_dict, load_config
from s2unet.data import DataError
from s2unet.inference import InferenceOptions, run_inference
from s2unet.models import create_model_from_config
from s2unet.models.checkpoint import atomic_save, model_payload
from s2unet.models.zoo import ZOO_ENV
from s2unet.text import PhraseBank
from s2unet.weights import CheckpointError

REPO = Path(__file__).resolve().parents[1]
TINY = {"encoder": "sam2.1_hiera_tiny", "weights": "random", "decoder_channels": [16, 16, 16]}
AFFINE = np.array([[0.0, -0.8, 0.0, 10.0], [0.7, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]])


def _checkpoint(path: Path, cfg, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(model_payload(create_model_from_config(cfg), cfg, 0.5, {"dice": 0.0}, **extra), path)
    return path


def image_checkpoint(path: Path) -> Path:
    return _checkpoint(path, config_from_dict({"model": TINY, "data": {"kind": "image", "image_size": 64,
                                                                        "labels": ["masks/lungs"]}}))


def volume_checkpoint(path: Path) -> Path:
    return _checkpoint(path, config_from_dict({"model": TINY, "data": {"kind": "volume", "image_size": 64,
                                                                        "labels": ["infection"]}}))


def text_checkpoint(path: Path) -> Path:
    cfg = load_config(None, [
        "data.labels=[masks/disc, masks/square]", "data.task=multilabel", "data.image_size=64",
        "model.weights=random", "model.encoder=sam2.1_hiera_tiny", "model.decoder_channels=[16, 16, 16]",
        "text.enabled=true", "text.structures=[{label: disc, phrases: [disc, circle, round spot]}, "
        "{label: square, phrases: [square, box, square block]}]",
    ])
    return _checkpoint(path, cfg, text=PhraseBank.build(cfg).to_payload())


def write_zoo(folder: Path, name: str, checkpoint: Path, sha256: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.pt"
    target.write_bytes(checkpoint.read_bytes())
    entry = {"file": target.name, "sha256": sha256 or hashlib.sha256(target.read_bytes()).hexdigest(),
             "command": "python train.py --config cxr_lung.yaml", "val_dice": 0.5, "licence": "test data"}
    (folder / "zoo.json").write_text(json.dumps({"format": "s2unet-zoo", "models": {name: entry}}))
    return target


def picture(path: Path) -> Path:
    image = np.full((64, 64), 40, np.uint8)
    image[:20] = 255
    Image.fromarray(image).save(path)
    return path


def ct_volume(path: Path) -> Path:
    data = np.full((64, 64, 6), -800, np.int16)
    data[20:40, 10:30] = 40
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def test_importing_s2unet_loads_nothing_heavy() -> None:
    out = subprocess.run([sys.executable, "-c", "import sys, s2unet; print(sorted(m for m in ('torch', 'numpy', "
                          "'s2unet.api', 's2unet.cli') if m in sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
    assert s2unet.load is s2unet.api.load and s2unet.Segmenter is s2unet.api.Segmenter  # imported on first use
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        s2unet.nope  # noqa: B018


def test_predict_matches_infer_and_keeps_the_files_geometry(tmp_path: Path) -> None:
    ckpt = volume_checkpoint(tmp_path / "ct.pt")
    vol = ct_volume(tmp_path / "case01.nii.gz")  # stored P-R-S: served reoriented, returned as stored
    result = s2unet.load(ckpt, device="cpu").predict_volume(vol)
    assert result.mask.shape == (1, 64, 64, 6) and result.probabilities.shape == (1, 64, 64, 6)
    run_inference(ckpt, vol, tmp_path / "infer", InferenceOptions(probabilities=True, show_progress=False))
    infer_mask = np.asarray(nib.load(tmp_path / "infer" / "case01_pred.nii.gz").dataobj)
    infer_prob = nib.load(tmp_path / "infer" / "case01_prob.nii.gz").get_fdata()
    np.testing.assert_array_equal(result.mask[0], infer_mask.astype(bool))
    np.testing.assert_allclose(result.probabilities[0], infer_prob, atol=1e-6)
    saved = result.save(tmp_path / "api_pred.nii.gz")
    written = nib.load(saved[0])
    assert np.allclose(written.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(written.dataobj), infer_mask)


def test_arrays_pictures_and_refusals(tmp_path: Path) -> None:
    seg = s2unet.load(image_checkpoint(tmp_path / "img.pt"), device="cpu")
    png = picture(tmp_path / "chest.png")
    from_file, from_array = seg.predict(png), seg.predict(np.asarray(Image.open(png)))
    assert from_file.mask.shape == (1, 64, 64) and from_file.label_names == ["lungs"]
    np.testing.assert_allclose(from_file.probabilities, from_array.probabilities, atol=1e-6)
    with pytest.raises(DataError, match=r"<array 4x4x4>: this model was trained on 2D images"):
        seg.predict(np.zeros((4, 4, 4)))
    with pytest.raises(DataError, match=r"gray values in 0..1 or uint8, got 0..300"):
        seg.predict(np.linspace(0, 300, 64 * 64).reshape(64, 64))
    with pytest.raises(DataError, match="chest.png is a 2D picture, not a volume; use predict"):
        seg.predict_volume(png)
    with pytest.raises(DataError, match="is not a text-prompted checkpoint; its labels are lungs"):
        seg.predict(png, text=["lungs"])


def test_zoo_names_resolve_sha256_checked_for_the_api_and_infer(tmp_path: Path, monkeypatch, capsys) -> None:
    zoo = tmp_path / "zoo"
    monkeypatch.setenv(ZOO_ENV, str(zoo))
    with pytest.raises(CheckpointError, match=r"checkpoint cxr-lungs is neither a file nor a model of the zoo; "
                                              r"known models: none yet"):
        s2unet.load("cxr-lungs", device="cpu")
    with pytest.raises(CheckpointError, match=r"^checkpoint runs/x/best.pt does not exist$"):
        s2unet.load("runs/x/best.pt", device="cpu")  # a path is not looked up in the zoo
    target = write_zoo(zoo, "cxr-lungs", image_checkpoint(tmp_path / "img.pt"))
    assert s2unet.load("cxr-lungs", device="cpu").label_names == ["lungs"]
    with pytest.raises(CheckpointError, match=r"checkpoint cxr-lung is .*\(did you mean 'cxr-lungs'\?\); known models: cxr-lungs"):
        s2unet.load("cxr-lung", device="cpu")
    png = picture(tmp_path / "x.png")
    assert main(["--checkpoint", "cxr-lungs", "--input", str(png), "--output", str(tmp_path / "out")],
                command="infer") == 0
    assert (tmp_path / "out" / "x_pred.png").is_file()
    from s2unet.app import build_state

    state = build_state(png, tmp_path / "labels", None, checkpoint="cxr-lungs", prompted=None)  # the app drafts with it
    assert state.drafter is not None and [layer.name for layer in state.layers] == ["lungs"]
    write_zoo(zoo, "cxr-lungs", image_checkpoint(tmp_path / "img.pt"), sha256="0" * 64)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(target))} has sha256 .* but 0+ was expected"):
        s2unet.load("cxr-lungs", device="cpu")
    target.unlink()
    assert main(["--checkpoint", "cxr-lungs", "--input", str(png), "--output", str(tmp_path / "out2")],
                command="infer") == 2
    assert f"zoo model 'cxr-lungs': its file {target} is missing" in capsys.readouterr().err


def test_the_shipped_zoo_registry_is_valid(monkeypatch) -> None:
    from s2unet.models.zoo import zoo_folder, zoo_models

    monkeypatch.delenv(ZOO_ENV, raising=False)
    assert zoo_folder() == REPO / "weights" / "zoo" and (zoo_folder() / "zoo.json").is_file()
    for model in zoo_models().values():  # each listed file is committed beside it with its digest
        assert model.path.is_file() and hashlib.sha256(model.path.read_bytes()).hexdigest() == model.sha256


def test_the_docs_examples_run(tmp_path: Path, monkeypatch, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "python_api.md").read_text(), re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    image_ckpt = image_checkpoint(tmp_path / "runs" / "cxr_lung" / "best.pt")
    volume_checkpoint(tmp_path / "runs" / "covid_ct" / "best.pt")
    text_checkpoint(tmp_path / "runs" / "cxr_text" / "best.pt")
    monkeypatch.setenv(ZOO_ENV, str(tmp_path / "zoo"))
    write_zoo(tmp_path / "zoo", "cxr-lungs", image_ckpt)
    picture(tmp_path / "chest.png")
    ct_volume(tmp_path / "ct.nii.gz")
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/python_api.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    # every printed value is the one the page's comment states
    stated = [line.split("#", 1)[1].strip() for b in blocks for line in b.splitlines() if line.startswith("print(")]
    assert len(printed) == len(stated) and all(s.startswith(p) for p, s in zip(printed, stated)), (printed, stated)
    assert (tmp_path / "chest_pred.png").is_file() and (tmp_path / "ct_pred.nii.gz").is_file()
