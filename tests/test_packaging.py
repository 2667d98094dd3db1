"""Packaging: pyproject's ranges admit the tested pins of constraints.txt, the wheel ships the
configs, and the version is one number everywhere."""
from __future__ import annotations

import importlib.resources
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import s2unet
from s2unet.cli import main
from s2unet.config import load_config
from s2unet.config.loading import resolve_config_path

REPO = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


# wordllama carries the text model's files, whose sha256 are known for one version only.
EXACT = {"wordllama"}


def test_every_dependency_is_a_range_that_admits_its_tested_pin() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    # "s2unet[export]" in an extra names another extra of this package, not a dependency
    requirements = [req for r in project["dependencies"] + extras if (req := Requirement(r)).name != "s2unet"]
    pins = _pins()
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} has no tested version in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req} refuses the tested {pins[name]}"
        exact = any(s.operator in ("==", "===") for s in req.specifier)
        assert exact == (name in EXACT), f"{req}: {'pins one version' if exact else 'is not the exact pin it needs'}"
    assert set(pins) == {canonicalize_name(r.name) for r in requirements}, "constraints.txt pins a package s2unet does not use"


def test_the_configs_are_package_resources_and_the_top_level_folder_is_the_same(tmp_path, monkeypatch) -> None:
    shipped = importlib.resources.files("s2unet") / "configs"
    names = sorted(p.name for p in shipped.iterdir() if p.name.endswith(".yaml"))
    assert "covid_ct.yaml" in names and "compare_cxr_lung.yaml" in names
    assert sorted(p.name for p in (REPO / "configs").glob("*.yaml")) == names
    assert (REPO / "configs").resolve() == (REPO / "s2unet" / "configs").resolve()
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("cxr_lung.yaml").read_text() == shipped.joinpath("cxr_lung.yaml").read_text()
    assert load_config("cxr_lung.yaml").name == "cxr_lung"


def test_the_wheel_ships_the_configs_and_the_version(tmp_path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO / "s2unet", src / "s2unet", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("s2unet-*.whl")
    files = zipfile.ZipFile(wheel).namelist()
    for name in ("covid_ct.yaml", "cxr_anatomy_text.yaml", "compare_covid_ct.yaml"):
        assert f"s2unet/configs/{name}" in files
    assert wheel.name.startswith(f"s2unet-{s2unet.__version__}-")


def test_version_flag(capsys) -> None:
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"s2unet {s2unet.__version__}"
    out = subprocess.run([sys.executable, "-m", "s2unet", "--version"], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == f"s2unet {s2unet.__version__}"
