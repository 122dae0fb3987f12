"""The wheel installs one top-level package, ``novelty``: ``training/`` (a folder at the top of the repository)
goes in as ``novelty.training``, and the package list in ``pyproject.toml`` names every package there is."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def _setuptools() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _packages_on_disk() -> set[str]:
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "novelty").rglob("__init__.py")}
    found |= {
        "novelty.training" + "".join("." + s for s in p.parent.relative_to(ROOT / "training").parts)
        for p in (ROOT / "training").rglob("__init__.py")
    }
    return found


def test_the_package_list_names_every_package_and_maps_training_under_novelty():
    conf = _setuptools()
    assert set(conf["packages"]) == _packages_on_disk()
    assert conf["package-dir"] == {"novelty.training": "training"}
    assert not any(p == "training" or p.startswith("training.") for p in conf["packages"])


def test_the_wheel_holds_novelty_alone_with_training_inside(tmp_path):
    src = (
        tmp_path / "src"
    )  # a clean copy: no build/ left over from an earlier build, nothing written to the repo
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("novelty", "training"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("novelty-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"novelty", next(t for t in top if t.endswith(".dist-info"))}
    assert {
        "novelty/training/__init__.py",
        "novelty/training/fit.py",
        "novelty/training/windshield.py",
    } <= set(names)
    assert not [n for n in names if n.startswith(("benchmarks/", "tests/", "notebooks/"))]


def test_training_imports_as_part_of_novelty():
    import novelty.training
    from novelty.trainers import training_api

    assert training_api("a test") is novelty.training
    assert callable(novelty.training.train_classifier)
