"""The one percentile bootstrap of the drift tests (:mod:`novelty.drift.bootstrap`) gives, seed for seed, the
numbers the four tests drew before they shared it: each test is compared bit for bit with a copy of its
former implementation kept below (``_old_*``), and so are the calls built on them (``DriftReference.test``,
``monitor``), run once with the tests as they are and once with the copies in their place."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from novelty import drift
from novelty.drift import bootstrap
from novelty.drift.bootstrap import bootstrap_interval, percentile_interval
from novelty.drift.histogram import ReferenceClusters, _pct, _tv
from novelty.drift.mmd import _BLOCK as _MMD_BLOCK
from novelty.drift.mmd import _mmd2_from_counts, _mmd2_from_indicators, rbf_kernel_matrix
from novelty.drift.pvalues import _ks_greater
from novelty.drift.result import DriftTestResult, as_pvalues, as_sample, sequential_p_value, subsample
from novelty.errors import InvalidInputError


# --- the former implementations, as they were before the bootstrap was shared ---------------------------
def _old_mmd_test(
    reference: object,
    window: object,
    *,
    n_permutations: int = 200,
    stop_after: int | None = None,
    bandwidth: float | None = None,
    max_reference: int | None = 1000,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> DriftTestResult:
    ref = as_sample(reference, "reference")
    win = as_sample(window, "window", dim=ref.shape[1])
    n_boot = n_bootstrap
    rng = np.random.default_rng(seed)
    x = subsample(ref, max_reference, rng)
    n, m = x.shape[0], win.shape[0]
    k, sigma = rbf_kernel_matrix(np.concatenate([x, win]), bandwidth)
    big_n = n + m
    rowsum = k.sum(axis=1)
    total = float(rowsum.sum())
    a_obs = np.zeros((big_n, 1))
    a_obs[:n] = 1.0
    observed = float(_mmd2_from_indicators(k, a_obs, n, m, rowsum, total)[0])

    def draw(b: int) -> np.ndarray:
        order = np.argsort(rng.random((b, big_n)), axis=1)[:, :n]
        a = np.zeros((big_n, b))
        a[order.T, np.arange(b)[None, :]] = 1.0
        return _mmd2_from_indicators(k, a, n, m, rowsum, total)

    p_value, null = sequential_p_value(
        observed, draw, n_permutations, stop_after=stop_after, block=_MMD_BLOCK
    )

    lo = hi = math.nan
    if n_boot:
        boots = []
        for start in range(0, n_boot, _MMD_BLOCK):
            b = min(_MMD_BLOCK, n_boot - start)
            cx = np.zeros((big_n, b))
            cy = np.zeros((big_n, b))
            for j in range(b):
                cx[:n, j] = np.bincount(rng.integers(0, n, n), minlength=n)
                cy[n:, j] = np.bincount(rng.integers(0, m, m), minlength=m)
            boots.append(_mmd2_from_counts(k, cx, cy, n, m))
        bs = np.concatenate(boots)
        a_tail = (1.0 - confidence) / 2
        lo, hi = float(np.quantile(bs, a_tail)), float(np.quantile(bs, 1 - a_tail))
    return DriftTestResult(
        test="mmd",
        statistic=observed,
        p_value=p_value,
        effect=observed,
        effect_name="MMD² (RBF kernel, median-heuristic bandwidth)",
        ci_low=lo,
        ci_high=hi,
        n_window=m,
        n_reference=n,
        details={
            "bandwidth": sigma,
            "n_permutations": int(null.size),
            "n_bootstrap": n_boot,
            "null_mean": float(null.mean()) if null.size else None,
        },
        confidence=confidence,
    )


def _old_pvalue_ks_test(
    p_values: object,
    *,
    n_calibration: int | None = None,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> DriftTestResult:
    import warnings

    from scipy import stats

    p = as_pvalues(p_values)
    n_cal = n_calibration
    n_boot = n_bootstrap
    details: dict[str, object] = {}
    if n_cal is not None:
        window = np.clip(np.rint(p * (n_cal + 1)) - 1, 0, n_cal)
        grid: np.ndarray | None = np.arange(1, n_cal + 1) - 0.5
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.ks_2samp(window, grid, alternative="greater")
        details.update(n_calibration=n_cal, null="two-sample KS against the calibration scores")
    else:
        window, grid = p, None
        res = stats.kstest(p, "uniform", alternative="greater")
        details["null"] = "one-sample KS against U(0, 1)"
    d = _ks_greater(window, grid)
    rng = np.random.default_rng(seed)
    boots = np.array([_ks_greater(window[rng.integers(0, p.size, p.size)], grid) for _ in range(n_boot)])
    a = (1.0 - confidence) / 2
    lo, hi = (
        (float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))) if n_boot else (math.nan, math.nan)
    )
    details["n_bootstrap"] = n_boot
    return DriftTestResult(
        test="pvalue-ks",
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        effect=d,
        effect_name="KS distance D+ (excess of small p-values over the null CDF)",
        ci_low=lo,
        ci_high=hi,
        n_window=int(p.size),
        n_reference=n_cal or 0,
        details=details,
        confidence=confidence,
    )


def _old_prediction_test(
    reference_predictions: Sequence[Any],
    window_predictions: Sequence[Any],
    *,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> DriftTestResult:
    from scipy import stats

    ref = [str(p) for p in reference_predictions if p is not None and str(p) != ""]
    win = [str(p) for p in window_predictions if p is not None and str(p) != ""]
    n_boot = n_bootstrap
    classes = sorted(set(ref) | set(win))
    pos = {c: i for i, c in enumerate(classes)}
    rc = np.bincount([pos[c] for c in ref], minlength=len(classes))
    wc = np.bincount([pos[c] for c in win], minlength=len(classes))
    n, m = int(rc.sum()), int(wc.sum())
    if len(classes) < 2:
        chi2, p_value = 0.0, 1.0
    else:
        res = stats.chi2_contingency(np.stack([rc, wc]), correction=False)
        chi2, p_value = float(res.statistic), float(res.pvalue)
    pr, pw = rc / n, wc / m
    tv = 0.5 * float(np.abs(pr - pw).sum())
    lo = hi = math.nan
    if n_boot:
        rng = np.random.default_rng(seed)
        br = rng.multinomial(n, pr, size=n_boot) / n
        bw = rng.multinomial(m, pw, size=n_boot) / m
        bs = 0.5 * np.abs(br - bw).sum(axis=1)
        a = (1.0 - confidence) / 2
        lo, hi = float(np.quantile(bs, a)), float(np.quantile(bs, 1 - a))
    return DriftTestResult(
        test="predictions",
        statistic=chi2,
        p_value=p_value,
        effect=tv,
        effect_name="total variation distance between predicted-class distributions",
        ci_low=lo,
        ci_high=hi,
        n_window=m,
        n_reference=n,
        details={"classes": classes, "reference_shares": pr.tolist(), "window_shares": pw.tolist()},
        confidence=confidence,
    )


def _old_histogram_test(
    clusters: ReferenceClusters,
    window: object,
    *,
    n_permutations: int = 500,
    stop_after: int | None = None,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    n_findings: int = 3,
    seed: int = 0,
) -> DriftTestResult:
    win = as_sample(window, "window", dim=clusters.dim_)
    n_boot = n_bootstrap
    k = clusters.n_clusters
    rng = np.random.default_rng(seed)
    ref_labels = clusters.reference_labels_
    win_labels = clusters.assign(win)
    n, m = ref_labels.size, win_labels.size
    ref_counts = np.bincount(ref_labels, minlength=k)
    win_counts = np.bincount(win_labels, minlength=k)
    observed = float(_tv(ref_counts[None, :], win_counts[None, :])[0])
    pooled = np.concatenate([ref_labels, win_labels])
    total = np.bincount(pooled, minlength=k)

    def draw(b: int) -> np.ndarray:
        pick = np.argsort(rng.random((b, n + m)), axis=1)[:, :m]
        wc = np.zeros((b, k), dtype=np.int64)
        np.add.at(wc, (np.repeat(np.arange(b), m), pooled[pick].ravel()), 1)
        return _tv(total[None, :] - wc, wc)

    p_value, null = sequential_p_value(observed, draw, n_permutations, stop_after=stop_after, block=256)

    lo = hi = math.nan
    if n_boot:
        pr, pw = ref_counts / n, win_counts / m
        bs = _tv(rng.multinomial(n, pr, size=n_boot), rng.multinomial(m, pw, size=n_boot))
        a = (1.0 - confidence) / 2
        lo, hi = float(np.quantile(bs, a)), float(np.quantile(bs, 1 - a))

    ref_share, win_share = ref_counts / n, win_counts / m
    order = np.argsort(-np.abs(win_share - ref_share), kind="stable")
    table = [
        {
            "cluster": int(c),
            "reference_share": float(ref_share[c]),
            "window_share": float(win_share[c]),
            "change": float(win_share[c] - ref_share[c]),
            "representative": clusters.representative_ids_[c],
        }
        for c in range(k)
    ]
    findings = []
    for c in order[: max(0, n_findings)]:
        if win_share[c] == ref_share[c]:
            break
        verb = "grew" if win_share[c] > ref_share[c] else "shrank"
        findings.append(
            f"cluster {int(c)} (like {clusters.representative_ids_[c]}) {verb} from {_pct(ref_share[c])} "
            f"to {_pct(win_share[c])}"
        )
    return DriftTestResult(
        test="histogram",
        statistic=observed,
        p_value=p_value,
        effect=observed,
        effect_name="1 − histogram intersection of cluster occupancies (total variation distance)",
        ci_low=lo,
        ci_high=hi,
        n_window=m,
        n_reference=n,
        details={
            "n_clusters": k,
            "n_permutations": int(null.size),
            "null_mean": float(null.mean()) if null.size else None,
            "findings": findings,
            "clusters": table,
        },
        arrays={"window_clusters": win_labels},
        confidence=confidence,
    )


# --- helpers --------------------------------------------------------------------------------------------
def _blobs(rng: np.random.Generator, n: int, d: int = 6, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, :2] += shift
    return x


def _bits(x: Any) -> Any:
    """``x`` with every float replaced by its exact bit pattern (NaN equals NaN, 0.0 differs from -0.0)."""
    if isinstance(x, dict):
        return {k: _bits(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_bits(v) for v in x]
    if isinstance(x, np.ndarray):
        return (x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, (float, np.floating)):
        return np.float64(x).tobytes()
    return x


def _same(new: DriftTestResult, old: DriftTestResult) -> None:
    a, b = vars(new), vars(old)
    assert a.keys() == b.keys()
    for key in a:
        assert _bits(a[key]) == _bits(b[key]), key


# --- each test, bit for bit -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"seed": 3, "confidence": 0.8, "n_permutations": 50, "stop_after": 5},
        {"seed": 1, "n_bootstrap": 300, "max_reference": 40},  # three blocks of replicates, a subsample
        {"n_bootstrap": 0},
        {"n_bootstrap": 1, "n_permutations": 0, "bandwidth": 2.0},
    ],
)
def test_mmd_test_draws_the_same_interval(kwargs):
    rng = np.random.default_rng(7)
    ref, win = _blobs(rng, 60), _blobs(rng, 30, shift=0.4)
    _same(drift.mmd_test(ref, win, **kwargs), _old_mmd_test(ref, win, **kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"n_calibration": 99, "seed": 4},
        {"n_calibration": 500, "confidence": 0.5, "n_bootstrap": 257},
        {"n_bootstrap": 0},
        {"n_bootstrap": 1, "seed": 9},
    ],
)
def test_pvalue_ks_test_draws_the_same_interval(kwargs):
    rng = np.random.default_rng(8)
    n_cal = kwargs.get("n_calibration", 1000)
    p = (1 + rng.integers(0, n_cal + 1, 70) // 2) / (n_cal + 1)  # conformal p-values, too many small ones
    _same(drift.pvalue_ks_test(p, **kwargs), _old_pvalue_ks_test(p, **kwargs))


@pytest.mark.parametrize(
    "kwargs", [{}, {"seed": 5, "confidence": 0.9, "n_bootstrap": 333}, {"n_bootstrap": 0}, {"n_bootstrap": 1}]
)
def test_prediction_test_draws_the_same_interval(kwargs):
    ref = ["dry"] * 50 + ["wet"] * 40 + ["ice"] * 3
    win = ["dry"] * 12 + ["wet"] * 20 + ["ice"] * 9 + [None, ""]
    _same(drift.prediction_test(ref, win, **kwargs), _old_prediction_test(ref, win, **kwargs))
    one = ["dry"] * 10
    _same(drift.prediction_test(one, one, **kwargs), _old_prediction_test(one, one, **kwargs))


@pytest.fixture(scope="module")
def clusters() -> ReferenceClusters:
    return ReferenceClusters(n_clusters=5, seed=2).fit(_blobs(np.random.default_rng(11), 200))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"seed": 6, "confidence": 0.99, "n_permutations": 99, "stop_after": 3},
        {"n_bootstrap": 0},
        {"n_bootstrap": 1, "n_permutations": 0},
    ],
)
def test_histogram_test_draws_the_same_interval(clusters, kwargs):
    win = _blobs(np.random.default_rng(12), 40, shift=0.8)
    _same(drift.histogram_test(clusters, win, **kwargs), _old_histogram_test(clusters, win, **kwargs))


def test_a_reference_and_a_monitored_stream_give_the_same_results(monkeypatch):
    """The calls built on the four tests: every result and the run's JSON and table, bit for bit."""
    rng = np.random.default_rng(13)
    emb = _blobs(rng, 300)
    stream = np.concatenate([_blobs(rng, 60), _blobs(rng, 60, shift=0.7)])
    p = np.concatenate([rng.uniform(0.001, 1, 60), rng.uniform(0.001, 0.3, 60)])
    perms = {"mmd": 49, "classifier": 9, "histogram": 99}

    def run() -> tuple[dict[str, DriftTestResult], drift.DriftRun]:
        ref = drift.DriftReference(emb, n_clusters=4, n_calibration=999, permutations=perms)
        one = ref.test(stream[:40], p[:40], tests=["pvalue-ks", "mmd", "histogram"], seed=2)
        many = drift.monitor(
            ref, stream, p_values=p, window="40", tests=["pvalue-ks", "mmd", "histogram"], thresholds=False
        )
        return one, many

    one_new, run_new = run()
    monkeypatch.setattr("novelty.drift.reference.mmd_test", _old_mmd_test)
    monkeypatch.setattr("novelty.drift.reference.pvalue_ks_test", _old_pvalue_ks_test)
    monkeypatch.setattr("novelty.drift.reference.histogram_test", _old_histogram_test)
    one_old, run_old = run()
    assert one_new.keys() == one_old.keys()
    for t in one_new:
        _same(one_new[t], one_old[t])
    for w_new, w_old in zip(run_new.windows, run_old.windows, strict=True):
        for t in w_new.tests:
            _same(w_new.tests[t], w_old.tests[t])
    assert _bits(run_new.to_json()) == _bits(run_old.to_json())
    assert run_new.table() == run_old.table()


# --- the function itself --------------------------------------------------------------------------------
def test_percentile_interval_is_numpys_quantiles_and_nan_without_replicates():
    v = np.random.default_rng(0).normal(size=101)
    assert percentile_interval(v, 0.9) == (float(np.quantile(v, 0.05)), float(np.quantile(v, 0.95)))
    lo, hi = percentile_interval(np.empty(0), 0.95)
    assert math.isnan(lo) and math.isnan(hi)


def test_resampling_images_and_resampling_class_counts_agree_in_distribution():
    """The two forms draw the same law: a sample of images with k classes resampled image by image, or its
    histogram resampled by a multinomial, give intervals of the share of one class that nearly agree."""
    labels = np.repeat([0, 1, 2], [30, 50, 20])

    def share_of_images(counts: np.ndarray) -> np.ndarray:  # (b, 100): draws of each image
        return counts[:, labels == 2].sum(axis=1) / labels.size

    def share_of_classes(counts: np.ndarray) -> np.ndarray:  # (b, 3): draws of each class
        return counts[:, 2] / counts.sum(axis=1)

    by_image = bootstrap_interval(
        share_of_images, sizes=[labels.size], n_boot=4000, confidence=0.9, rng=np.random.default_rng(1)
    )
    by_class = bootstrap_interval(
        share_of_classes,
        class_counts=[np.bincount(labels)],
        n_boot=4000,
        confidence=0.9,
        rng=np.random.default_rng(2),
    )
    exact = (0.14, 0.27)  # 5 % and 95 % quantiles of Binomial(100, 0.2) / 100
    assert by_image == pytest.approx(exact, abs=0.011) and by_class == pytest.approx(exact, abs=0.011)


def test_bootstrap_interval_needs_exactly_one_form_of_the_samples():
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidInputError, match="either as sizes or as class_counts"):
        bootstrap_interval(lambda c: c.sum(1), n_boot=10, confidence=0.9, rng=rng)
    with pytest.raises(InvalidInputError, match="either as sizes or as class_counts"):
        bootstrap_interval(
            lambda c: c.sum(1), sizes=[3], class_counts=[np.ones(3)], n_boot=10, confidence=0.9, rng=rng
        )
    assert bootstrap.__all__ == ["bootstrap_interval", "percentile_interval"]
