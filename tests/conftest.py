"""Shared fixtures. Real data: the textile images of conformal-clip-data, embedded once per session."""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import pytest

import novelty
from novelty.datasets import textile
from novelty.datasets.cache import cache_root, write_cache


@pytest.fixture(scope="session")
def embedder() -> novelty.Embedder:
    return novelty.Embedder(num_workers=2)


@pytest.fixture(scope="session")
def textile_paths() -> dict:
    return textile()


@pytest.fixture(scope="session")
def textile_embeddings(embedder, textile_paths) -> dict[str, np.ndarray]:
    """Embeddings of all nominal images and of 200 images of each defect kind (real pretrained backbone).

    Cached on disk (``$NOVELTY_CACHE/test-embeddings``) under a key of the backbone's weights fingerprint and
    every file's path, size and mtime, so the fast tier embeds them once per machine, not once per run."""
    sets = {
        "nominal": textile_paths["nominal"],
        "global": textile_paths["global"][:200],
        "local": textile_paths["local"][:200],
    }
    h = hashlib.sha256(embedder.fingerprint.encode())
    for name, paths in sets.items():
        for p in paths:
            st = os.stat(p)
            h.update(f"{name}\0{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    path = cache_root("test-embeddings") / f"textile-{h.hexdigest()[:24]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in sets}
    out = {name: embedder.embed(paths) for name, paths in sets.items()}

    def write(fh: io.BufferedWriter) -> None:
        np.savez(fh, **out)

    write_cache(path, write, owner="tests")
    return out


@pytest.fixture(scope="session")
def bench_cache_dir(tmp_path_factory) -> str:
    """One cache folder for the benchmark tests and the notebooks (embeddings made once per session)."""
    return str(tmp_path_factory.mktemp("novelty-cache"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
