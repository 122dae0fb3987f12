"""Approximate index kinds: exact re-ranking, chunked build, remove, persistence (synthetic vectors: kNN math)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import novelty.index_plan as index_plan
from novelty.errors import ArtifactIntegrityError, InvalidInputError, NotFittedError
from novelty.index import EmbeddingIndex, default_nlist, default_pq_m, plan_index

KINDS = ["ivf-flat", "ivf-pq", "opq", "hnsw"]


def clustered(n: int, d: int = 32, seed: int = 0, centers: int = 20) -> np.ndarray:
    """Clusters on an 8-dimensional subspace plus a little noise: a decaying spectrum, as embeddings have."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(8, d))
    c = np.random.default_rng(98).normal(size=(centers, 8)) * 3
    z = c[rng.integers(0, centers, n)] + rng.normal(size=(n, 8))
    return (z @ basis + 0.1 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = clustered(6000, seed=0)
    q = clustered(100, seed=1)
    return x, q


def numpy_distances(q: np.ndarray, x: np.ndarray, ids: np.ndarray) -> np.ndarray:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.linalg.norm(qn[:, None, :].astype(np.float64) - xn[ids].astype(np.float64), axis=2)


@pytest.mark.parametrize("kind", KINDS)
def test_kind_finds_neighbours_with_exact_distances(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    exact_d, exact_i = EmbeddingIndex().add(x).search(q, 10)
    idx = EmbeddingIndex(
        kind=kind, refine=40 if kind in ("ivf-pq", "opq") else None, pq_m=8 if kind == "opq" else None
    ).add(x)
    assert idx.resolved_kind == kind
    D, I = idx.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, exact_i, strict=True)])
    assert recall >= 0.9, (kind, recall)
    # every distance returned is the true distance of the id returned (exact re-ranking), sorted
    np.testing.assert_allclose(D, numpy_distances(q, x, I), atol=1e-6)
    assert (np.diff(D, axis=1) >= 0).all()
    # a found neighbour can only be farther than the true one, never closer
    assert (D[:, -1] >= exact_d[:, -1] - 1e-6).all()


@pytest.mark.parametrize("kind", KINDS)
def test_exclude_self(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    idx = EmbeddingIndex(kind=kind).add(x[:2000])
    D, I = idx.search(idx.vectors(), 3, exclude_self=True)
    assert not (np.arange(2000)[:, None] == I).any()
    assert (D > 0).all()


def test_too_few_candidates_fall_back_to_brute_force() -> None:
    x = clustered(3000, seed=3)
    # one list probed of many: some queries get fewer than k candidates from FAISS
    idx = EmbeddingIndex(kind="ivf-flat", nlist=64, nprobe=1).add(x)
    q = clustered(50, seed=4, centers=50)
    D, I = idx.search(q, 60)
    assert (I >= 0).all() and np.isfinite(D).all()
    np.testing.assert_allclose(D, numpy_distances(q, x, I), atol=1e-6)


def test_remove_shifts_ids_and_matches_a_rebuilt_index(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    for kind in ("flat", "ivf-flat", "hnsw"):
        idx = EmbeddingIndex(kind=kind).add(x)
        drop = np.arange(0, 6000, 3)
        kept = idx.remove(drop)
        assert idx.ntotal == 4000 and kept.shape == (4000,) and kept[0] == 1 and kept[1] == 2
        D, I = idx.search(q, 5)
        _, ref_i = EmbeddingIndex().add(x[kept]).search(q, 5)
        np.testing.assert_allclose(D, numpy_distances(q, x[kept], I), atol=1e-6)
        assert np.mean(I[:, 0] == ref_i[:, 0]) >= (1.0 if kind == "flat" else 0.9)
        # adding after a removal continues the ids
        idx.add(x[:10])
        assert idx.ntotal == 4010


def test_remove_validates() -> None:
    idx = EmbeddingIndex(kind="ivf-flat").add(clustered(2000))
    with pytest.raises(InvalidInputError, match="in \\[0, 2000\\)"):
        idx.remove([2000])
    with pytest.raises(InvalidInputError, match="duplicates"):
        idx.remove([1, 1])
    with pytest.raises(InvalidInputError, match="every vector"):
        idx.remove(np.arange(2000))
    with pytest.raises(NotFittedError):
        EmbeddingIndex(kind="ivf-flat").remove([0])


def test_build_from_npy_in_chunks_matches_add(tmp_path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    path = tmp_path / "x.npy"
    np.save(path, x)
    seen: list[int] = []
    built = EmbeddingIndex.build(
        path,
        kind="ivf-flat",
        chunk=1000,
        store_path=tmp_path / "store.npy",
        progress=lambda d, n: seen.append(d),
    )
    assert seen == [1000, 2000, 3000, 4000, 5000, 6000]
    assert built.store_bytes() == (6000 * 32 * 4, True)  # the store is memory-mapped from store.npy
    added = EmbeddingIndex(kind="ivf-flat").add(x)
    assert built.plan_ == added.plan_
    Db, _ = built.search(q, 10)
    Dx, _ = EmbeddingIndex().add(x).search(q, 10)
    assert np.median(np.abs(Db[:, -1] - Dx[:, -1]) / Dx[:, -1]) < 0.01
    flat = EmbeddingIndex.build(path, kind="flat", chunk=700)
    np.testing.assert_allclose(flat.search(q, 10)[0], Dx, atol=1e-6)


def test_auto_picks_by_size(monkeypatch) -> None:
    assert plan_index("auto", 1000, 64).kind == "flat"
    assert plan_index("auto", index_plan.AUTO_FLAT_MAX + 1, 1280).kind == "ivf-pq"
    monkeypatch.setattr(index_plan, "AUTO_FLAT_MAX", 1000)
    assert EmbeddingIndex(kind="auto").add(clustered(2000)).resolved_kind == "ivf-pq"


def test_plan_defaults() -> None:
    assert default_nlist(1_000_000) == 1024
    assert default_nlist(2000) * 39 <= 2000
    assert default_pq_m(1280) == 320 and 1280 % default_pq_m(1280) == 0
    assert default_pq_m(30) % 2 == 0 and 30 % default_pq_m(30) == 0
    p = plan_index("opq", 1_000_000, 1280)
    assert p.factory == "OPQ160_640,IVF1024,PQ160x4fs" and p.refine == 80


@pytest.mark.parametrize("kind", ["ivf-pq", "hnsw"])
def test_save_load_directory_with_checksums(kind: str, tmp_path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    idx = EmbeddingIndex(kind=kind).add(x)
    idx.set_search(refine=30) if kind == "ivf-pq" else idx.set_search(ef_search=200)
    idx.save(tmp_path / "i")
    loaded = EmbeddingIndex.load(tmp_path / "i")
    assert loaded.plan_ == idx.plan_ and loaded.get_params() == idx.get_params()
    assert loaded.store_bytes()[1] is True  # memory-mapped
    np.testing.assert_array_equal(loaded.search(q, 10)[1], idx.search(q, 10)[1])
    in_memory = EmbeddingIndex.load(tmp_path / "i", mmap=False)
    assert in_memory.store_bytes()[1] is False
    # a changed byte in the store is caught by its checksum
    raw = bytearray((tmp_path / "i" / "vectors.npy").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "i" / "vectors.npy").write_bytes(bytes(raw))
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        EmbeddingIndex.load(tmp_path / "i")


def test_load_refuses_a_store_of_the_wrong_shape(tmp_path) -> None:
    idx = EmbeddingIndex(kind="ivf-flat").add(clustered(2000))
    with pytest.raises(InvalidInputError, match="vector store"):
        EmbeddingIndex.from_bytes(idx.to_bytes(), meta=idx.meta(), store=np.zeros((5, 32), np.float32))
    with pytest.raises(InvalidInputError, match="missing"):
        EmbeddingIndex.from_bytes(idx.to_bytes(), meta=idx.meta(), store=None)
    idx.save(tmp_path / "d")
    meta = json.loads((tmp_path / "d" / "index.json").read_text())
    meta["sha256"]["../evil"] = "0"
    (tmp_path / "d" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidInputError, match="unexpected file"):
        EmbeddingIndex.load(tmp_path / "d")


def test_opq_refuses_too_few_training_vectors() -> None:
    # FAISS's OPQ training takes the whole process down on a few hundred vectors: refused before it starts
    with pytest.raises(InvalidInputError, match="at least 1000 vectors"):
        EmbeddingIndex(kind="opq").add(clustered(400, d=64))


def test_bad_arguments() -> None:
    with pytest.raises(InvalidInputError, match="kind must be one of"):
        EmbeddingIndex(kind="annoy")
    with pytest.raises(InvalidInputError, match="not both"):
        EmbeddingIndex(kind="hnsw", factory="HNSW32")
    with pytest.raises(InvalidInputError, match="nprobe"):
        EmbeddingIndex(kind="ivf-flat", nprobe=0)
    with pytest.raises(NotFittedError):
        EmbeddingIndex(kind="ivf-flat").set_search(nprobe=4)
    with pytest.raises(InvalidInputError, match="refine"):
        EmbeddingIndex().add(clustered(100)).set_search(refine=3)


def test_get_params_round_trip() -> None:
    assert EmbeddingIndex().get_params() == {"metric": "cosine", "factory": "Flat"}
    assert EmbeddingIndex(factory="HNSW32").get_params() == {"metric": "cosine", "factory": "HNSW32"}
    p = EmbeddingIndex(kind="ivf-pq", nprobe=8).get_params()
    assert p == {"metric": "cosine", "kind": "ivf-pq", "nprobe": 8}
    assert EmbeddingIndex(**p).get_params() == p


@pytest.mark.parametrize("kind", ["ivf-pq", "hnsw"])
def test_detector_artifact_keeps_the_kind_and_its_store(
    kind: str, tmp_path, embedder, textile_embeddings
) -> None:
    import novelty

    x = textile_embeddings["nominal"]
    det = novelty.NoveltyDetector(embedder=embedder, index=kind).fit_embeddings(x[:-50])
    assert det.index_.resolved_kind == kind
    det.save(tmp_path / "d")
    assert (tmp_path / "d" / "index_vectors.npy").is_file()
    loaded = novelty.NoveltyDetector.load(tmp_path / "d", embedder=embedder)
    assert loaded.index_.plan_ == det.index_.plan_ and loaded.index_.get_params() == det.index_.get_params()
    a, b = det.score_embeddings(x[-50:]), loaded.score_embeddings(x[-50:])
    np.testing.assert_array_equal(a.scores["knn"], b.scores["knn"])
    np.testing.assert_array_equal(a.p_value, b.p_value)
    # a changed byte in the vector store is caught by the artifact's checksums
    raw = bytearray((tmp_path / "d" / "index_vectors.npy").read_bytes())
    raw[-3] ^= 1
    (tmp_path / "d" / "index_vectors.npy").write_bytes(bytes(raw))
    with pytest.raises(ArtifactIntegrityError):
        novelty.NoveltyDetector.load(tmp_path / "d", embedder=embedder)
