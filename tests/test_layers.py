"""Package layering: every import inside s2unet points down the layer order (or stays in its
own layer), and engine and inference never import each other.

The order, bottom to top (README "Repository layout", DESIGN): io -> config -> weights (checkpoints: lookup,
sha256, the strict loader, CheckpointError) -> data | text | prompts -> models -> losses/metrics -> predict ->
engine | inference -> baselines | api -> app/cli. Lazy imports and ``TYPE_CHECKING`` imports count too.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "s2unet"

# Layer of each top-level module or package of s2unet; a module may import its own layer and
# any lower one. Entries with the same number are peers that must not import each other.
LAYERS: dict[str, tuple[int, str]] = {
    "io": (0, "io"), "runtime": (0, "io"),
    "config": (1, "config"), "devices": (1, "config"),
    "weights": (2, "weights"),
    # data, text and prompts are peers: text models and phrase banks know nothing of cases, and
    # prompt geometry (used by models, baselines and the app) knows neither.
    "data": (3, "data"), "text": (3, "text"), "prompts": (3, "prompts"),
    "models": (4, "models"),
    "losses": (5, "losses/metrics"), "metrics": (5, "losses/metrics"),
    "predict": (6, "predict"),
    "engine": (7, "engine"), "inference": (7, "inference"),
    "baselines": (8, "baselines"), "api": (8, "api"),
    "app": (9, "app/cli"), "cli": (9, "app/cli"), "__main__": (9, "app/cli"),
}

# DESIGN's rule beyond the order: models never imports data (engine is above it anyway).
FORBIDDEN = {("models", "data")}


def _top(module: str) -> str:
    """``s2unet.engine.trainer`` -> ``engine``; the package itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every s2unet import in a source file of the package at ``root``."""
    module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "s2unet"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "s2unet":
                # ``from .. import x`` names a submodule x of the package
                names = [f"{target}.{a.name}" for a in node.names] if target == "s2unet" else [target]
                found += [(node.lineno, n) for n in names]
    return found


def layer_violations(root: Path = PACKAGE) -> list[str]:
    """Every import that goes up the layer order or across between peers, as readable lines."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        source = _top(".".join(path.relative_to(root.parent).with_suffix("").parts))
        if source in ("", "__init__"):
            continue  # the package's own __init__ imports nothing
        if source not in LAYERS:
            bad.append(f"{path.relative_to(root.parent)}: module {source!r} has no layer in LAYERS")
            continue
        rank, name = LAYERS[source]
        for line, target in _imports(path, root):
            top = _top(target)
            if top in ("", source) or top == "__version__":
                continue
            if top not in LAYERS:
                bad.append(f"{path.relative_to(root.parent)}:{line} imports {target} (no layer)")
                continue
            their_rank, their_name = LAYERS[top]
            if their_rank > rank or (their_rank == rank and their_name != name) or (name, their_name) in FORBIDDEN:
                bad.append(f"{path.relative_to(root.parent)}:{line}: {name} imports {target} ({their_name})")
    return bad


def test_imports_follow_the_layer_order() -> None:
    assert layer_violations() == []


def test_the_check_catches_an_upward_and_a_sideways_import(tmp_path: Path) -> None:
    fake = tmp_path / "s2unet"
    (fake / "engine").mkdir(parents=True)
    (fake / "inference").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "engine" / "validation.py").write_text("from ..inference.predictor import Predictor\n")
    (fake / "inference" / "run.py").write_text("def f():\n    from s2unet.engine import checkpoint\n")
    (fake / "config.py").write_text("from . import models\n")
    (fake / "models").mkdir()
    (fake / "models" / "cnn.py").write_text("from ..data.cases import Case\n")
    (fake / "weights.py").write_text("if True:\n    from .models.encoders import EncoderSpec\n")
    (fake / "text.py").write_text("from .data import SliceDataset\n")
    assert layer_violations(fake) == [
        "s2unet/config.py:1: config imports s2unet.models (models)",
        "s2unet/engine/validation.py:1: engine imports s2unet.inference.predictor (inference)",
        "s2unet/inference/run.py:2: inference imports s2unet.engine (engine)",
        "s2unet/models/cnn.py:1: models imports s2unet.data.cases (data)",
        "s2unet/text.py:1: text imports s2unet.data (data)",
        "s2unet/weights.py:2: weights imports s2unet.models.encoders (models)",
    ]


def test_importing_the_package_changes_no_process_state() -> None:
    """Importing s2unet's modules sets no environment variable (OMP_WAIT_POLICY was one) and no
    thread count. Third-party libraries are imported first: monai and peft set variables of their own."""
    child = (
        "import json, os, torch, monai, peft, sam2.modeling.backbones.hieradet; "
        "before, threads = dict(os.environ), torch.get_num_threads(); "
        "import s2unet, s2unet.models, s2unet.engine.trainer, s2unet.inference, s2unet.baselines, s2unet.cli; "
        "changed = {k: v for k, v in os.environ.items() if before.get(k) != v}; "
        "print(json.dumps([changed, torch.get_num_threads() == threads]))"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True, env=env,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[{}, true]"


@pytest.mark.parametrize("preset", [None, "ACTIVE"])
def test_the_command_line_sets_the_openmp_policy_before_torch(preset: str | None) -> None:
    """``main`` asks for passive OpenMP threads before torch loads, and keeps the user's choice."""
    child = (
        "import os, sys; from s2unet.cli import main; "
        "code = main(['evaluate', '--pred', 'nowhere', '--gt', 'nowhere']); "
        "print(code, os.environ.get('OMP_WAIT_POLICY'))"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True, env=env,
                         cwd=PACKAGE.parent)
    assert out.stdout.split() == ["2", preset or "PASSIVE"]
