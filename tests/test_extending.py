"""docs/extending.md's examples run as written: each is registered for one test, built and used.

Copy one of these tests as the template for a new encoder, loss, prompt strategy or format.
"""
from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from s2unet.config import ConfigError, load_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _blocks() -> dict[str, str]:
    """The doc's Python blocks by the section (## heading) they sit in."""
    blocks, section = {}, None
    for part in re.split(r"(^## [^\n]*$|^```python\n.*?^```$)", DOC.read_text(), flags=re.M | re.S):
        if part.startswith("## "):
            section = part[3:].strip()
        elif part.startswith("```python"):
            blocks[section] = part[len("```python\n"):-3]
    return blocks


def _load(section: str, package: str, name: str) -> types.ModuleType:
    """Run a doc block as the module ``package.name`` would run (relative imports included)."""
    module = types.ModuleType(f"{package}.{name}")
    module.__package__ = package
    sys.modules[module.__name__] = module
    try:
        exec(compile(_blocks()[section], f"docs/extending.md ({section})", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module


def test_every_section_has_its_example():
    assert {"An encoder", "An architecture", "A loss", "A prompt strategy", "A data format"} <= set(_blocks())


def test_encoder_example_trains_with_adapters(monkeypatch):
    from s2unet.models import create_model_from_config
    from s2unet.models.encoders import base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    _load("An encoder", "s2unet.models.encoders", "toy_cnn")
    model = create_model_from_config(load_config(None, ["model.encoder=toy_cnn", "model.weights=random",
                                                        "data.image_size=64"]))
    out = model(torch.rand(2, 3, 64, 64))
    assert out[-1].shape == (2, 1, 64, 64)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("adapter" in n for n in trained) and not any(n.startswith("encoder.") for n in trained)
    out[-1].mean().backward()


def test_loss_example_takes_its_keys(monkeypatch):
    from s2unet.losses import registry

    module = _load("A loss", "s2unet.losses", "tversky")
    monkeypatch.setitem(registry.LOSSES, "tversky", module.SPEC)
    cfg = load_config(None, ["loss.name=tversky", "loss.beta=0.9"])
    loss = registry.build_loss(cfg.loss, multiclass=False)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    assert float(loss([torch.zeros(2, 1, 16, 16)], target)) > 0
    with pytest.raises(ConfigError, match="loss.beta"):
        registry.build_loss(load_config(None, ["loss.name=tversky", "loss.beta=2"]).loss, multiclass=False)


def test_strategy_example_boxes_the_largest_component(monkeypatch):
    from s2unet.prompts import strategies

    module = _load("A prompt strategy", "s2unet.prompts", "box_largest")
    monkeypatch.setitem(strategies.STRATEGIES, "box_largest", module.BoxLargest)
    mask = np.zeros((32, 32), bool)
    mask[2:5, 2:5] = True
    mask[10:30, 12:20] = True
    strategy = strategies.create_strategy("box_largest", {"jitter": 0.0})
    prompts = strategy.prompts(module.PromptInputs(reference=mask))
    np.testing.assert_array_equal(prompts.boxes, [[12, 10, 19, 29]])
    assert strategy.uses_ground_truth
    assert strategy.prompts(module.PromptInputs(reference=np.zeros_like(mask))).n_objects == 0


# The doc's strategy as a real file and the registry importing it at its top, served from
# tmp_path in place of the package's own strategies.py (nothing in the package is written).
_OVERLAY = """
import importlib.abc, importlib.util, sys
FILES = {files!r}
class Overlay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_file_location(name, FILES[name]) if name in FILES else None
sys.meta_path.insert(0, Overlay())
from s2unet.prompts import STRATEGIES, create_strategy
print(type(create_strategy("box_largest")).__name__, create_strategy("box_largest").uses_ground_truth)
"""


def test_strategy_example_registers_from_its_own_file_without_an_import_cycle(tmp_path):
    """One new file plus the registry's import and entry: the registry imports the new file
    while it is itself being imported, which works only if the base class lives apart."""
    registry = (DOC.parents[1] / "s2unet" / "prompts" / "strategies.py").read_text()
    first_import = registry.index("\nfrom .")
    registry = (registry[:first_import] + "\nfrom .box_largest import BoxLargest" + registry[first_import:]
                + '\nSTRATEGIES["box_largest"] = BoxLargest\n')
    (tmp_path / "strategies.py").write_text(registry)
    (tmp_path / "box_largest.py").write_text(_blocks()["A prompt strategy"])
    files = {f"s2unet.prompts.{n}": str(tmp_path / f"{n}.py") for n in ("strategies", "box_largest")}
    out = subprocess.run([sys.executable, "-c", _OVERLAY.format(files=files)], capture_output=True, text=True,
                         cwd=DOC.parents[1])
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1:]
    assert out.stdout.split() == ["BoxLargest", "True"]


def test_format_example_round_trips_geometry(monkeypatch, tmp_path):
    from s2unet.io import formats

    module = _load("A data format", "s2unet.io", "npz")
    monkeypatch.setattr(formats, "FORMATS", (*formats.FORMATS, module.NpzFormat()))
    affine = np.array([[0, 0, 2.5, 10], [-0.8, 0, 0, 20], [0, 0.8, 0, -5], [0, 0, 0, 1]], float)
    array = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    np.savez(tmp_path / "case01.npz", array=array, affine=affine)

    case = formats.read_case(tmp_path / "case01.npz")
    assert formats.case_stem(tmp_path / "case01.npz", "volume") == "case01"
    # served in the orientation convention: closest L-P-I, the closest RAS with every axis reversed
    reference = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    np.testing.assert_array_equal(case.get_array(), reference.get_fdata()[::-1, ::-1, ::-1])
    mask = (case.get_array() > 30).astype(np.uint8)
    out = case.write_like(mask, tmp_path / "case01_pred.npz", np.uint8, binary=True)
    with np.load(out) as saved:
        np.testing.assert_array_equal(saved["affine"], affine)
        np.testing.assert_array_equal(saved["array"], (array > 30).astype(np.uint8))
    np.savez(tmp_path / "broken.npz", array=array)
    with pytest.raises(Exception, match="broken.npz: the archive lacks affine"):
        formats.read_case(tmp_path / "broken.npz")


def test_architecture_example_trains_through_the_engine_and_predicts(monkeypatch, tmp_path):
    """The doc's architecture, registered as its registry line does, trains one step through the
    real trainer; its best.pt rebuilds it by name and validates (the predictor's path)."""
    from test_train import make_volumes, tiny_train_cfg

    from s2unet.config import ARCH_TRAITS
    from s2unet.data import build_datasets
    from s2unet.engine import trainer
    from s2unet.engine.validation import validate
    from s2unet.models import archs, get_architecture
    from s2unet.models.archs import base
    from s2unet.models.checkpoint import load_model_checkpoint

    module = _load("An architecture", "s2unet.models.archs", "pixel_mlp")
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setitem(ARCH_TRAITS, "pixel_mlp", module.ARCH.traits)  # undone after the test
    archs.register_architecture(module.ARCH)
    assert get_architecture("pixel_mlp").encoders == "none" and not get_architecture("pixel_mlp").takes_text

    volumes = make_volumes(tmp_path / "vols", n_cases=3, size=48, depth=2)
    cfg = tiny_train_cfg(volumes, tmp_path / "runs", "model.arch=pixel_mlp", "data.image_size=48",
                         "train.epochs=1", "train.steps_per_epoch=1")
    run = trainer.train(cfg)
    loaded = load_model_checkpoint(run / "best.pt")
    assert isinstance(loaded.model, module.PixelMLP)
    val = build_datasets(loaded.config.data, loaded.config.seed).val
    scores = validate(loaded.model, loaded.config, val, torch.device("cpu"))
    assert 0.0 <= scores["summary"]["dice"] <= 1.0
    assert scores["summary"]["dice"] == pytest.approx(loaded.metrics["dice"], abs=1e-6)
    with pytest.raises(ConfigError, match="text.enabled needs model.arch s2unet, not 'pixel_mlp'"):
        load_config(None, ["model.arch=pixel_mlp", "text.enabled=true", "data.labels=[masks/a]"])
