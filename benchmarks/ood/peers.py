"""The detectors a user would otherwise pick, run on the very same embeddings as novelty's scorers.

Each peer is fitted on the embeddings novelty's scorers are fitted on (never the calibration or test
images) with the library's own defaults, except where a default cannot run (noted per peer). Scores are
turned around where needed so that, as everywhere in novelty, higher = more novel. ``native`` flags are
the library's own in/out decision at its default threshold (``None`` where it has none): they show the
false-alarm rate a user gets without calibration.

==================  ===========================================================================================
peer                what
==================  ===========================================================================================
``pyod-knn``        PyOD ``KNN`` (distance to the 5th neighbour, Euclidean; on unit vectors a monotone map of
                    novelty's cosine kNN). Threshold: ``contamination=0.1``.
``pyod-ae``         PyOD ``AutoEncoder`` (MLP 64-32, 10 epochs, standardised inputs). ``contamination=0.1``.
``pyod-ecod``       PyOD ``ECOD`` (empirical-CDF tail probabilities per dimension). ``contamination=0.1``.
``sklearn-lof``     scikit-learn ``LocalOutlierFactor(novelty=True)`` (20 neighbours). Threshold: its offset.
``sklearn-iforest`` scikit-learn ``IsolationForest`` (100 trees, ``random_state=seed``). Threshold: its offset.
``cleanlab-ood``    cleanlab ``OutOfDistribution`` on features (mean cosine distance to 10 neighbours, mapped
                    to [0, 1]). No threshold.
``ptood-maha``      pytorch-ood ``Mahalanobis`` (``fit_features``/``predict_features``): class means and one
                    shared covariance (+1e-6 ridge) when the caller passes labels, one Gaussian otherwise.
``ptood-knn``       pytorch-ood ``KNN`` (its default k = 50, normalised features, distance to the k-th).
``ptood-rmd``       pytorch-ood ``RMD`` (relative Mahalanobis); only with labels.
``ptood-vim``       pytorch-ood ``ViM`` (d = 256 principal dimensions) with the backbone's ImageNet classifier
                    ``(W, b)``; only when the caller passes them (and un-normalised pooled features).
==================  ===========================================================================================

Peers that need what the caller does not give (labels, the classifier) raise :class:`PeerNotApplicableError`:
the benchmark lists them as skipped with that reason.

Install them with ``pip install 'novelty[bench]'`` (``make setup`` does).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from novelty.datasets import DatasetNotInstalledError
from novelty.errors import UnknownNameError

__all__ = ["PEERS", "Peer", "PeerNotApplicableError", "PeerNotInstalledError", "PeerOutput", "run_peer"]


class PeerNotInstalledError(DatasetNotInstalledError):
    """The library behind a peer is not installed; the message says how to install it."""


class PeerNotApplicableError(PeerNotInstalledError):
    """The peer needs an input this call does not give (labels, a classifier); the message says which."""


@dataclass
class PeerOutput:
    scores: list[np.ndarray]  # one array per scored set, higher = more novel
    native: list[np.ndarray] | None  # the library's own "outlier" decision per scored set


FitScore = Callable[..., PeerOutput]  # (x_fit, sets, seed, *, labels=None, classifier=None) -> PeerOutput


@dataclass(frozen=True)
class Peer:
    name: str
    library: str
    fit_score: FitScore


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Peers print progress bars and warnings of their own; keep the benchmark's output readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _require(module: str, pip_name: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise PeerNotInstalledError(
            f"this peer needs {pip_name}: pip install {pip_name}  (or: pip install 'novelty[bench]')"
        )


def _pyod(make: Callable[[int], object]) -> FitScore:
    def fit_score(x: np.ndarray, sets: Sequence[np.ndarray], seed: int, **_: object) -> PeerOutput:
        _require("pyod", "pyod")
        with _quiet():
            model = make(seed)
            model.fit(x)  # type: ignore[attr-defined]
            scores = [np.asarray(model.decision_function(s), dtype=np.float64) for s in sets]  # type: ignore[attr-defined]
            native = [np.asarray(model.predict(s)) == 1 for s in sets]  # type: ignore[attr-defined]
        return PeerOutput(scores, native)

    return fit_score


def _pyod_knn(seed: int) -> object:
    from pyod.models.knn import KNN

    return KNN()


def _pyod_ae(seed: int) -> object:
    import torch
    from pyod.models.auto_encoder import AutoEncoder

    return AutoEncoder(random_state=seed, verbose=0, device=torch.device("cpu"))


def _pyod_ecod(seed: int) -> object:
    from pyod.models.ecod import ECOD

    return ECOD()


def _sklearn(make: Callable[[int], object]) -> FitScore:
    """scikit-learn outlier detectors: ``score_samples`` is higher for inliers; ``predict`` is -1 for outliers."""

    def fit_score(x: np.ndarray, sets: Sequence[np.ndarray], seed: int, **_: object) -> PeerOutput:
        _require("sklearn", "scikit-learn")
        with _quiet():
            model = make(seed)
            model.fit(x)  # type: ignore[attr-defined]
            scores = [-np.asarray(model.score_samples(s), dtype=np.float64) for s in sets]  # type: ignore[attr-defined]
            native = [np.asarray(model.predict(s)) == -1 for s in sets]  # type: ignore[attr-defined]
        return PeerOutput(scores, native)

    return fit_score


def _sklearn_lof(seed: int) -> object:
    from sklearn.neighbors import LocalOutlierFactor

    return LocalOutlierFactor(novelty=True)


def _sklearn_iforest(seed: int) -> object:
    from sklearn.ensemble import IsolationForest

    return IsolationForest(random_state=seed)


def _cleanlab(x: np.ndarray, sets: Sequence[np.ndarray], seed: int, **_: object) -> PeerOutput:
    _require("cleanlab", "cleanlab")
    logging.getLogger("cleanlab").setLevel(logging.ERROR)
    with _quiet():  # importing cleanlab imports tqdm.auto, which warns inside notebooks without ipywidgets
        from cleanlab.outlier import OutOfDistribution

        ood = OutOfDistribution()
        ood.fit(features=x, verbose=False)
        # cleanlab: smaller = less typical; turned around so that higher = more novel
        return PeerOutput([1.0 - ood.score(features=s).astype(np.float64) for s in sets], None)


def _ptood_labels(labels: np.ndarray | None, n: int, peer: str, *, required: bool = False) -> Any:
    import torch

    if labels is None:
        if required:
            raise PeerNotApplicableError(f"{peer} needs class labels of the fitting images")
        return torch.zeros(n, dtype=torch.long)
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    return torch.from_numpy(codes.astype(np.int64).ravel())


def _ptood(kind: str) -> FitScore:
    """pytorch-ood feature-level detectors; their ``predict_features`` is already higher = more novel."""

    def fit_score(
        x: np.ndarray,
        sets: Sequence[np.ndarray],
        seed: int,
        *,
        labels: np.ndarray | None = None,
        classifier: tuple[np.ndarray, np.ndarray] | None = None,
        **_: object,
    ) -> PeerOutput:
        _require("pytorch_ood", "pytorch-ood")
        import torch

        with _quiet():
            from pytorch_ood import detector as D

            z = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            det: Any
            if kind == "maha":
                det = D.Mahalanobis(None).fit_features(z, _ptood_labels(labels, len(z), "ptood-maha"))
            elif kind == "rmd":
                det = D.RMD(None).fit_features(z, _ptood_labels(labels, len(z), "ptood-rmd", required=True))
            elif kind == "knn":
                det = D.KNN(None).fit_features(z, _ptood_labels(None, len(z), "ptood-knn"))
            else:  # vim
                if classifier is None:
                    raise PeerNotApplicableError(
                        "ptood-vim needs the backbone's ImageNet classifier (W, b) and un-normalised features"
                    )
                w, b = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in classifier)
                det = D.ViM(None, d=min(256, z.shape[1] // 2), w=w, b=b)
                det.fit_features(z, _ptood_labels(None, len(z), "ptood-vim"))
            scores = [
                det.predict_features(torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32)))
                .double()
                .cpu()
                .numpy()
                for s in sets
            ]
        return PeerOutput(scores, None)

    return fit_score


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("pyod-knn", "pyod", _pyod(_pyod_knn)),
        Peer("pyod-ae", "pyod", _pyod(_pyod_ae)),
        Peer("pyod-ecod", "pyod", _pyod(_pyod_ecod)),
        Peer("sklearn-lof", "scikit-learn", _sklearn(_sklearn_lof)),
        Peer("sklearn-iforest", "scikit-learn", _sklearn(_sklearn_iforest)),
        Peer("cleanlab-ood", "cleanlab", _cleanlab),
        Peer("ptood-maha", "pytorch-ood", _ptood("maha")),
        Peer("ptood-knn", "pytorch-ood", _ptood("knn")),
        Peer("ptood-rmd", "pytorch-ood", _ptood("rmd")),
        Peer("ptood-vim", "pytorch-ood", _ptood("vim")),
    )
}


def run_peer(
    name: str,
    x_fit: np.ndarray,
    sets: Sequence[np.ndarray],
    seed: int = 0,
    *,
    labels: np.ndarray | None = None,
    classifier: tuple[np.ndarray, np.ndarray] | None = None,
) -> PeerOutput:
    """Fit peer ``name`` on ``x_fit`` and score every array of ``sets``. ``labels`` (of ``x_fit``) and the
    backbone's ``classifier`` ``(W, b)`` go to the peers that use them; the others ignore them."""
    if name not in PEERS:
        raise UnknownNameError(f"unknown peer {name!r}; choose from {sorted(PEERS)}")
    x = np.ascontiguousarray(x_fit, dtype=np.float32)
    return PEERS[name].fit_score(x, sets, seed, labels=labels, classifier=classifier)
