"""Scorer contract for every registered scorer, and kNN against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from novelty.errors import ArtifactVersionError, InvalidInputError, NotFittedError, UnknownNameError
from novelty.scorers import REGISTRY, KNNScorer, LocalKNNScorer, Scorer, create_scorer, register_scorer


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def knn_reference(
    train: np.ndarray, q: np.ndarray, k: int, aggregate: str, exclude_self: bool = False
) -> np.ndarray:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - train[None].astype(np.float64)) ** 2).sum(-1))
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    d = np.sort(d, axis=1)[:, :k]
    return d[:, -1] if aggregate == "kth" else d.mean(axis=1)


@pytest.mark.parametrize("aggregate", ["kth", "mean"])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_knn_equals_numpy_reference(rng, k, aggregate):
    train = unit(rng.normal(size=(300, 48)))
    q = unit(rng.normal(size=(40, 48)))
    s = KNNScorer(k=k, aggregate=aggregate).fit(train)
    np.testing.assert_allclose(s.score(q), knn_reference(train, q, k, aggregate), atol=1e-5)
    np.testing.assert_allclose(s.score_training(), knn_reference(train, train, k, aggregate, True), atol=1e-5)


def test_knn_higher_means_more_novel(rng):
    train = unit(rng.normal(size=(200, 16)) + 5.0)  # a tight cluster
    near = unit(rng.normal(size=(20, 16)) + 5.0)
    far = unit(rng.normal(size=(20, 16)) - 5.0)
    s = KNNScorer(k=5).fit(train)
    assert s.score(far).min() > s.score(near).max()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registered_scorer_contract(rng, name):
    scorer = create_scorer(name)
    assert isinstance(scorer, Scorer) and scorer.name == name
    with pytest.raises(NotFittedError):
        scorer.score(unit(rng.normal(size=(2, 8))))
    train = unit(rng.normal(size=(100, 8)))
    labels = np.arange(100) % 2 if getattr(scorer, "requires_labels", False) else None
    assert scorer.fit(train, labels) is scorer
    out = scorer.score(unit(rng.normal(size=(7, 8))))
    assert out.shape == (7,) and out.dtype == np.float64 and np.isfinite(out).all()
    assert type(scorer)(**scorer.get_params()).get_params() == scorer.get_params()


def test_registry_errors():
    with pytest.raises(UnknownNameError, match="registered: autoencoder, knn, knn-local"):
        create_scorer("nope")
    with pytest.raises(InvalidInputError, match="aggregate"):
        KNNScorer(aggregate="median").fit(np.eye(4, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="k=5 needs more than 5"):
        KNNScorer(k=5).fit(np.eye(4, dtype=np.float32))


def test_local_knn_equals_numpy_reference(rng):
    train = unit(rng.normal(size=(250, 24)))
    q = unit(rng.normal(size=(30, 24)))
    k = 7
    s = LocalKNNScorer(k=k).fit(train)
    d_tr = np.sqrt(((train[:, None].astype(np.float64) - train[None]) ** 2).sum(-1))
    np.fill_diagonal(d_tr, np.inf)
    kth_tr = np.sort(d_tr, axis=1)[:, k - 1]
    d_q = np.sqrt(((q[:, None].astype(np.float64) - train[None]) ** 2).sum(-1))
    nn = np.argsort(d_q, axis=1)[:, :k]
    ref = np.sort(d_q, axis=1)[:, k - 1] / (kth_tr[nn].mean(axis=1) + 1e-6)
    np.testing.assert_allclose(s.score(q), ref, rtol=1e-4)
    np.testing.assert_allclose(s.kth_distance_, kth_tr, atol=1e-5)


def test_local_knn_compares_like_with_like(rng):
    """A tight and a loose cluster: a point just outside the tight one is more novel than a typical point of
    the loose one, although its plain kNN distance is smaller."""
    tight = rng.normal(size=(200, 8)) * 0.05
    loose = rng.normal(size=(200, 8)) * 1.0 + 10.0
    train = np.vstack([tight, loose]).astype(np.float32)
    edge_of_tight = (rng.normal(size=(20, 8)) * 0.05 + 0.6).astype(np.float32)
    inside_loose = (rng.normal(size=(20, 8)) * 1.0 + 10.0).astype(np.float32)
    plain = KNNScorer(k=10, metric="euclidean").fit(train)
    local = LocalKNNScorer(k=10, metric="euclidean").fit(train)
    assert np.median(plain.score(edge_of_tight)) < np.median(plain.score(inside_loose))
    assert local.score(edge_of_tight).min() > local.score(inside_loose).max()


# --- arguments are checked in the constructor --------------------------------------------------------
def test_unknown_scorer_parameters_list_the_valid_ones():
    with pytest.raises(
        InvalidInputError,
        match=r"unknown parameter\(s\) kk for scorer 'knn'; valid parameters: k, aggregate, metric",
    ):
        create_scorer("knn", kk=3)
    with pytest.raises(InvalidInputError, match="pass them to its constructor"):
        create_scorer(KNNScorer(), k=3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: KNNScorer(k=-3), "k must be an integer ≥ 1, got -3"),
        (lambda: KNNScorer(k="5"), "k must be an integer, got the string '5'"),
        (lambda: KNNScorer(aggregate="median"), "aggregate must be one of 'kth', 'mean'"),
        (lambda: KNNScorer(metric="manhattan"), "metric must be one of"),
        (lambda: LocalKNNScorer(eps=-1.0), r"eps must lie in \[0, inf\)"),
        (lambda: create_scorer("autoencoder", hidden="256"), "hidden must be a list of layer widths"),
        (lambda: create_scorer("autoencoder", hidden=[0]), "each hidden width must be an integer ≥ 1"),
        (lambda: create_scorer("autoencoder", bottleneck=0), "bottleneck must be an integer ≥ 1"),
        (lambda: create_scorer("autoencoder", lr=0.0), r"lr must lie in \(0, inf\)"),
        (lambda: create_scorer("autoencoder", standardise="no"), "standardise must be True or False"),
    ],
)
def test_bad_scorer_arguments(make, message):
    with pytest.raises(InvalidInputError, match=message):
        make()


# --- a scorer of the user's own, registered -----------------------------------------------------------
class CentroidScorer(Scorer):
    """Distance to the training mean, to a power: a user's scorer with parameters and state."""

    name = "test-centroid"

    def __init__(self, power: float = 1.0):
        self.power = power

    def get_params(self):
        return {"power": self.power}

    def fit(self, embeddings, labels=None, *, index=None):
        self.centroid_ = np.asarray(embeddings, dtype=np.float64).mean(axis=0)
        self.fitted_ = True
        return self

    def score(self, embeddings):
        self._check_fitted()
        d = np.linalg.norm(np.asarray(embeddings, dtype=np.float64) - self.centroid_, axis=1)
        return d**self.power

    def state_arrays(self):
        return {"centroid": self.centroid_}

    @classmethod
    def from_state(cls, params, arrays, *, index=None):
        self = cls(**params)
        self.centroid_ = np.asarray(arrays["centroid"], dtype=np.float64)
        self.fitted_ = True
        return self


@pytest.fixture
def centroid_registered():
    register_scorer(CentroidScorer)
    yield CentroidScorer
    REGISTRY.pop(CentroidScorer.name, None)


def test_a_registered_scorer_of_ones_own_saves_and_loads(
    centroid_registered, textile_embeddings, embedder, tmp_path
):
    import novelty

    x = textile_embeddings["nominal"][:300]
    q = np.vstack([textile_embeddings["global"][:5], textile_embeddings["nominal"][700:705]])
    det = novelty.NoveltyDetector(
        embedder=embedder, scorers={"knn": None, "test-centroid": {"power": 2.0}}
    ).fit_embeddings(x)
    before = det.score_embeddings(q)
    out = det.save(tmp_path / "det")
    loaded = novelty.load(out, embedder=embedder)
    after = loaded.score_embeddings(q)
    np.testing.assert_array_equal(before.scores["test-centroid"], after.scores["test-centroid"])
    np.testing.assert_array_equal(before.p_value, after.p_value)
    assert loaded.scorers_[1].power == 2.0
    # a process that has not registered the class cannot load it, and says what to do
    REGISTRY.pop(CentroidScorer.name)
    with pytest.raises(
        ArtifactVersionError,
        match=r"scorer 'test-centroid' \(class CentroidScorer\) is not registered.*register_scorer",
    ):
        novelty.load(out, embedder=embedder)
    with pytest.raises(InvalidInputError, match="not registered"):
        det.save(tmp_path / "again")  # and saving it would write an artifact nobody could load


def test_register_scorer_refuses_what_could_not_round_trip():
    class NoState(CentroidScorer):
        name = "test-nostate"
        from_state = Scorer.from_state  # type: ignore[assignment]

    class BadName(CentroidScorer):
        name = "../evil"

    class Clash(CentroidScorer):
        name = "knn"

    with pytest.raises(InvalidInputError, match="must implement the classmethod from_state"):
        register_scorer(NoState)
    with pytest.raises(InvalidInputError, match="name must be a short name"):
        register_scorer(BadName)
    with pytest.raises(InvalidInputError, match=r"already registered to novelty\.scorers\.knn\.KNNScorer"):
        register_scorer(Clash)
    with pytest.raises(InvalidInputError, match=r"subclass of novelty\.Scorer"):
        register_scorer(dict)  # type: ignore[arg-type]
    assert not {"test-nostate", "../evil"} & set(REGISTRY) and REGISTRY["knn"] is KNNScorer
