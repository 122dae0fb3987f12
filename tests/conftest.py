"""Shared fixtures. Real data: the textile images of conformal-clip-data, embedded once per session."""

from __future__ import annotations

import numpy as np
import pytest

import novelty
from novelty.datasets import textile


@pytest.fixture(scope="session")
def embedder() -> novelty.Embedder:
    return novelty.Embedder(num_workers=2)


@pytest.fixture(scope="session")
def textile_paths() -> dict:
    return textile()


@pytest.fixture(scope="session")
def textile_embeddings(embedder, textile_paths) -> dict[str, np.ndarray]:
    """Embeddings of all nominal images and of 200 images of each defect kind (real pretrained backbone)."""
    return {
        "nominal": embedder.embed(textile_paths["nominal"]),
        "global": embedder.embed(textile_paths["global"][:200]),
        "local": embedder.embed(textile_paths["local"][:200]),
    }


@pytest.fixture(scope="session")
def bench_cache_dir(tmp_path_factory) -> str:
    """One cache folder for the benchmark tests and the notebooks (embeddings made once per session)."""
    return str(tmp_path_factory.mktemp("novelty-cache"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
