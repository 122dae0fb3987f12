"""The reference a window is compared with, and one call that runs every test on a window.

    ref = DriftReference.from_detector(det)          # the detector's training embeddings (its index)
    tests = ref.test(window_embeddings, p_values)    # {"pvalue-binomial": DriftTestResult, …}

**What the reference is.** A detector stores the embeddings it was *fitted* on (its FAISS index,
``det.index_.vectors()``); the embeddings of its calibration images are not stored (only their scores). So the
two-sample tests (MMD, classifier, histogram) compare the window with the fitting embeddings, and the tests on
p-values use the calibration through the p-values themselves (and the number of calibration scores).

**Thresholds from the reference's own windows** (:meth:`DriftReference.thresholds`, the way NannyML sets
them): the reference, in its stored order (for video, time order), is cut into consecutive chunks of the
window size; each chunk is compared with the rest of the reference by the same statistic (no permutations);
the threshold is the mean plus three standard deviations of those chunk statistics. It needs no
exchangeability, so it also calibrates the natural variation of data that is not i.i.d. (video), where
permutation p-values are too eager.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.drift.classifier import classifier_test
from novelty.drift.errors import DriftError
from novelty.drift.histogram import ReferenceClusters, _sq_dist, _tv, histogram_test
from novelty.drift.mmd import mmd_test
from novelty.drift.pvalues import pvalue_binomial_test, pvalue_ks_test
from novelty.drift.result import MIN_WINDOW, DriftTestResult, as_sample
from novelty.errors import InvalidInputError, UnknownNameError
from novelty.params import check_int, check_real

if TYPE_CHECKING:
    from novelty.detector import NoveltyDetector
    from novelty.head import ConditionHead
    from novelty.index import EmbeddingIndex

__all__ = ["EMBEDDING_TESTS", "PVALUE_TESTS", "TESTS", "DriftReference"]

PVALUE_TESTS: tuple[str, ...] = ("pvalue-binomial", "pvalue-ks")
EMBEDDING_TESTS: tuple[str, ...] = ("mmd", "classifier", "histogram")
TESTS: tuple[str, ...] = PVALUE_TESTS + EMBEDDING_TESTS

#: the classifier test compares a window of m images with at most max(4 m, 200) reference images
CLASSIFIER_REFERENCE_RATIO = 4
CLASSIFIER_MIN_REFERENCE = 200
#: permutations per test by default: modest, so that many windows run in minutes on 2 cores
DEFAULT_PERMUTATIONS: dict[str, int] = {"mmd": 200, "classifier": 100, "histogram": 500}


def check_tests(tests: Sequence[str] | None) -> tuple[str, ...]:
    if tests is None:
        return TESTS
    if isinstance(tests, str):
        tests = [t.strip() for t in tests.split(",") if t.strip()]
    if not isinstance(tests, Sequence):
        raise InvalidInputError(
            f"tests must be a list of test names or a comma-separated string, got {type(tests).__name__}"
        )
    unknown = [t for t in tests if not isinstance(t, str) or t not in TESTS]
    if unknown or not tests:
        raise UnknownNameError(
            f"unknown drift test(s) {reprlib.repr(unknown) if unknown else '(none given)'}; choose from "
            f"{', '.join(TESTS)}"
        )
    return tuple(dict.fromkeys(tests))


class DriftReference:
    """The reference embeddings (and what the tests need to know about the detector).

    Parameters
    ----------
    embeddings: ``(n, d)`` reference embeddings (a detector's: :meth:`from_detector`).
    ids: one name per reference embedding (training image ids), for readable findings.
    n_calibration: the detector's number of calibration scores (exact nulls of the p-value tests).
    alpha: the level at which the p-values flag an image (the detector's ``alpha``).
    index: an :class:`~novelty.index.EmbeddingIndex` over ``embeddings`` for nearest-neighbour look-ups.
    head: the detector's condition head, to compare predicted classes.
    n_clusters: k-means clusters of the histogram test.
    max_reference: reference images drawn (once, seeded) for MMD and the classifier test (which takes at most
        four times the window's size of them, at least 200).
    permutations: permutations per test (defaults in :data:`DEFAULT_PERMUTATIONS`): the most drawn.
    stop_after: stop a test's permutations once this many reached the observed statistic (Besag–Clifford,
        :func:`~novelty.drift.result.sequential_p_value`); ``None`` always draws them all.
    """

    def __init__(
        self,
        embeddings: object,
        *,
        ids: Sequence[str] | None = None,
        n_calibration: int | None = None,
        alpha: float = 0.05,
        index: EmbeddingIndex | None = None,
        head: ConditionHead | None = None,
        n_clusters: int = 16,
        max_reference: int = 1000,
        permutations: dict[str, int] | None = None,
        stop_after: int | None = 10,
        seed: int = 0,
    ):
        self.embeddings = as_sample(embeddings, "reference")
        if ids is not None and len(ids) != self.embeddings.shape[0]:
            raise InvalidInputError(
                f"ids has {len(ids)} entries for {self.embeddings.shape[0]} reference embeddings"
            )
        self.ids = (
            [str(i) for i in ids] if ids is not None else [f"#{i}" for i in range(self.embeddings.shape[0])]
        )
        self.n_calibration = (
            None if n_calibration is None else check_int(n_calibration, "n_calibration", minimum=1)
        )
        self.alpha = check_real(alpha, "alpha", low=0.0, high=1.0, low_open=True, high_open=True)
        self.index = index
        self.head = head
        self.n_clusters = check_int(n_clusters, "n_clusters", minimum=2)
        self.max_reference = check_int(max_reference, "max_reference", minimum=MIN_WINDOW)
        perms = dict(DEFAULT_PERMUTATIONS)
        for k, v in (permutations or {}).items():
            if k not in DEFAULT_PERMUTATIONS:
                raise UnknownNameError(
                    f"no permutations for test {k!r}; tests with permutations: {list(DEFAULT_PERMUTATIONS)}"
                )
            perms[k] = check_int(v, f"permutations[{k!r}]", minimum=0)
        self.permutations = perms
        self.stop_after = None if stop_after is None else check_int(stop_after, "stop_after", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self._clusters: ReferenceClusters | None = None
        self._predictions: list[Any] | None = None
        rng = np.random.default_rng([self.seed, 7])
        n = self.embeddings.shape[0]
        self._sample = (
            self.embeddings
            if n <= self.max_reference
            else self.embeddings[np.sort(rng.choice(n, self.max_reference, replace=False))]
        )
        self._shuffled = self._sample[rng.permutation(self._sample.shape[0])]

    @classmethod
    def from_detector(cls, detector: NoveltyDetector, **kwargs: Any) -> DriftReference:
        """The reference of a fitted detector: its fitting embeddings (index vectors) and training ids, its
        number of calibration scores, ``alpha``, index and head."""
        return cls(
            detector.index_.vectors(),
            ids=detector.train_ids_,
            n_calibration=detector.calibrator_.n,
            alpha=detector.alpha,
            index=detector.index_,
            head=detector.head_,
            **kwargs,
        )

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def clusters(self) -> ReferenceClusters:
        """k-means clusters of the reference (fitted on first use)."""
        if self._clusters is None:
            k = min(self.n_clusters, max(2, len(self) // 4))
            self._clusters = ReferenceClusters(k, seed=self.seed).fit(self.embeddings, ids=self.ids)
        return self._clusters

    def predictions(self) -> list[Any]:
        """The head's predicted class for every reference embedding (needs a head)."""
        if self.head is None:
            raise DriftError("the detector has no condition head: there are no predictions to compare")
        if self._predictions is None:
            self._predictions = list(self.head.predict(self.embeddings))
        return self._predictions

    def nearest(self, x: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, positions)`` of the ``k`` nearest reference embeddings of each row of ``x``."""
        k = min(k, len(self))
        q = as_sample(x, "query", dim=self.dim, minimum=1)
        if self.index is not None and self.index.ntotal == len(self):
            return self.index.search(q, k)
        d2 = np.maximum(_sq_dist(q, self.embeddings), 0.0)
        pos = np.argsort(d2, axis=1, kind="stable")[:, :k]
        return np.sqrt(np.take_along_axis(d2, pos, axis=1)), pos

    # --- tests ------------------------------------------------------------------------------------------
    def test(
        self,
        window: object | None = None,
        p_values: object | None = None,
        *,
        tests: Sequence[str] | None = None,
        seed: int | None = None,
        permutations: dict[str, int] | None = None,
    ) -> dict[str, DriftTestResult]:
        """Run ``tests`` (default all) on one window: the p-value tests need ``p_values``, the others the
        window's embeddings; a test whose input is not given is left out (all left out: an error).
        ``permutations`` overrides the reference's permutation counts for this call."""
        chosen = check_tests(tests)
        perms = {**self.permutations, **(permutations or {})}
        seed = self.seed if seed is None else check_int(seed, "seed", minimum=0)
        out: dict[str, DriftTestResult] = {}
        if p_values is not None:
            if "pvalue-binomial" in chosen:
                out["pvalue-binomial"] = pvalue_binomial_test(
                    p_values, self.alpha, n_calibration=self.n_calibration
                )
            if "pvalue-ks" in chosen:
                out["pvalue-ks"] = pvalue_ks_test(p_values, n_calibration=self.n_calibration, seed=seed)
        if window is not None:
            win = as_sample(window, "window", dim=self.dim)
            if "mmd" in chosen:
                out["mmd"] = mmd_test(
                    self._sample,
                    win,
                    n_permutations=perms["mmd"],
                    stop_after=self.stop_after,
                    max_reference=None,
                    seed=seed,
                )
            if "classifier" in chosen:
                # a window of m images against at most max(4m, 200) reference images: the AUC's precision is
                # bounded by the smaller sample, the cost grows with the larger one
                k_ref = max(CLASSIFIER_REFERENCE_RATIO * win.shape[0], CLASSIFIER_MIN_REFERENCE)
                out["classifier"] = classifier_test(
                    self._shuffled[:k_ref],
                    win,
                    n_permutations=perms["classifier"],
                    stop_after=self.stop_after,
                    max_reference=None,
                    seed=seed,
                )
            if "histogram" in chosen:
                out["histogram"] = histogram_test(
                    self.clusters,
                    win,
                    n_permutations=perms["histogram"],
                    stop_after=self.stop_after,
                    seed=seed,
                )
        if not out:
            raise InvalidInputError(
                f"nothing to test: tests {list(chosen)} need "
                + ("the window's embeddings" if window is None else "the window's p-values")
            )
        return out

    def statistic(self, test: str, window: np.ndarray, rest: np.ndarray | None = None) -> float:
        """The statistic of an embedding test alone (no permutations), of ``window`` against ``rest`` (default
        the reference sample)."""
        base = self._sample if rest is None else rest
        if test == "mmd":
            return mmd_test(
                base, window, n_permutations=0, n_bootstrap=0, max_reference=self.max_reference
            ).statistic
        if test == "classifier":
            return classifier_test(base, window, n_permutations=0, max_reference=self.max_reference).statistic
        if test == "histogram":
            return histogram_test(self.clusters, window, n_permutations=0, n_bootstrap=0).statistic
        raise UnknownNameError(
            f"no reference threshold for test {test!r}; tests with one: {list(EMBEDDING_TESTS)}"
        )

    def thresholds(
        self,
        size: int,
        *,
        tests: Sequence[str] | None = None,
        max_chunks: int = 10,
        n_sd: float = 3.0,
    ) -> dict[str, dict[str, Any]]:
        """Alarm thresholds for windows of ``size`` images from the reference's own chunks (see the module
        docstring): ``{test: {"threshold", "mean", "sd", "values", "chunks"}}``; a test whose reference is too
        small for two chunks gets ``{"threshold": None, "note": why}``."""
        size = check_int(size, "size", minimum=MIN_WINDOW)
        max_chunks = check_int(max_chunks, "max_chunks", minimum=2)
        n_sd = check_real(n_sd, "n_sd", low=0.0)
        out: dict[str, dict[str, Any]] = {}
        for test in check_tests(tests):
            if test not in EMBEDDING_TESTS:
                continue
            if test == "histogram":
                labels = self.clusters.reference_labels_
                pool = labels.size
            else:
                pool = len(self)
            n_chunks = min(max_chunks, pool // size, (pool - MIN_WINDOW) // size)
            if n_chunks < 2:
                out[test] = {
                    "threshold": None,
                    "note": f"the reference ({pool} images) holds fewer than two chunks of {size} beside a rest",
                }
                continue
            starts = np.linspace(0, pool - size, n_chunks).astype(int)
            values = []
            for s in starts:
                inside = np.zeros(pool, dtype=bool)
                inside[s : s + size] = True
                if test == "histogram":
                    k = self.clusters.n_clusters
                    a = np.bincount(labels[~inside], minlength=k)
                    b = np.bincount(labels[inside], minlength=k)
                    values.append(float(_tv(a[None, :], b[None, :])[0]))
                else:
                    values.append(self.statistic(test, self.embeddings[inside], self.embeddings[~inside]))
            v = np.array(values)
            mean, sd = float(v.mean()), float(v.std(ddof=1))
            out[test] = {
                "threshold": mean + n_sd * sd,
                "mean": mean,
                "sd": sd,
                "values": v.tolist(),
                "chunks": int(n_chunks),
                "size": size,
            }
        return out
