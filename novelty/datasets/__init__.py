"""Offline datasets (the data layer, like ``sklearn.datasets``): real images that install from package
registries, decoded once and cached. Never imported by the inference library.

- :mod:`~novelty.datasets.loaders`: textile defects, Fashion-MNIST, MNIST (5k), animal silhouettes;
- :mod:`~novelty.datasets.windshield`: the street video and its weather / lighting conditions (the
  windshield story), imported on its own since it needs OpenCV;
- :mod:`~novelty.datasets.cache`: the on-disk cache they share.
"""

from __future__ import annotations

from novelty.datasets.loaders import (
    FASHION_MNIST_CLASSES,
    DatasetNotInstalledError,
    TextileSplits,
    animals,
    fashion_mnist,
    mnist_5k,
    textile,
    textile_splits,
)

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
