"""novelty.drift: null calibration of every test (p-values uniform when nothing shifted), power against a
planted shift, numeric routines against reference implementations, clear errors on bad input, windows and
multiple testing, clusters of what is missing, the recommendation rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from novelty import drift
from novelty.calibration import conformal_p_values
from novelty.drift import (
    DriftReference,
    EmptyWindowError,
    NonFiniteEmbeddingsError,
    ReferenceClusters,
    WindowTooSmallError,
    classifier_test,
    histogram_test,
    mmd_test,
    pvalue_binomial_test,
    pvalue_ks_test,
)
from novelty.errors import DimensionMismatchError, InvalidInputError, NoveltyError

N_NULL = 200  # null windows per test


def _blobs(rng: np.random.Generator, n: int, d: int = 8, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, :2] += shift
    return x


def _uniform_ks(p: np.ndarray) -> float:
    return float(stats.kstest(p, "uniform").pvalue)


# --- null: p-values uniform (or super-uniform where the statistic is discrete) -------------------------
def test_mmd_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(1)
    p = np.array(
        [
            mmd_test(_blobs(rng, 60), _blobs(rng, 20), n_permutations=99, n_bootstrap=0, seed=i).p_value
            for i in range(N_NULL)
        ]
    )
    assert _uniform_ks(p) > 0.01
    assert np.mean(p <= 0.05) <= 0.05 + 0.035


def test_sequential_permutation_p_values_are_valid_under_the_null():
    """Besag–Clifford early stopping (stop_after): p-values still uniform, at a fraction of the permutations."""
    rng = np.random.default_rng(21)
    res = [
        mmd_test(_blobs(rng, 60), _blobs(rng, 20), n_permutations=999, stop_after=10, n_bootstrap=0, seed=i)
        for i in range(N_NULL)
    ]
    p = np.array([r.p_value for r in res])
    assert _uniform_ks(p) > 0.01
    assert np.mean(p <= 0.05) <= 0.05 + 0.035
    assert np.median([r.details["n_permutations"] for r in res]) < 50


def test_classifier_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(2)
    p = np.array(
        [
            classifier_test(
                _blobs(rng, 40), _blobs(rng, 20), n_permutations=39, n_components=4, seed=i
            ).p_value
            for i in range(N_NULL)
        ]
    )
    assert _uniform_ks(p) > 0.01
    assert np.mean(p <= 0.05) <= 0.05 + 0.035


def test_histogram_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(3)
    p = []
    for i in range(N_NULL):
        clusters = ReferenceClusters(4, seed=i).fit(_blobs(rng, 80))
        p.append(histogram_test(clusters, _blobs(rng, 20), n_permutations=199, n_bootstrap=0, seed=i).p_value)
    assert _uniform_ks(np.array(p)) > 0.01


def _conformal_window(rng: np.random.Generator, n_cal: int, m: int, shift: float = 0.0) -> np.ndarray:
    cal = rng.normal(size=n_cal)
    return conformal_p_values(cal, rng.normal(size=m) + shift)


def test_pvalue_ks_is_uniform_under_the_null_with_and_without_the_calibration_size():
    rng = np.random.default_rng(4)
    exact = [
        pvalue_ks_test(_conformal_window(rng, 300, 50), n_calibration=300, n_bootstrap=0).p_value
        for _ in range(N_NULL)
    ]
    # the two-sample KS p-value is conservative for discrete statistics: super-uniform, and near uniform
    assert np.mean(np.array(exact) <= 0.05) <= 0.05 + 0.035
    assert stats.kstest(exact, "uniform", alternative="less").pvalue > 0.01  # not smaller than uniform
    iid = [pvalue_ks_test(rng.uniform(size=50), n_bootstrap=0).p_value for _ in range(N_NULL)]
    assert _uniform_ks(np.array(iid)) > 0.01


def test_pvalue_binomial_is_valid_under_the_null_thanks_to_the_beta_binomial():
    """A window much larger than the calibration set: the plain binomial test raises far more false alarms
    than its level, the beta-binomial one (the shared calibration set taken into account) does not."""
    rng = np.random.default_rng(5)
    n_cal, m = 100, 400
    beta = np.array(
        [
            pvalue_binomial_test(_conformal_window(rng, n_cal, m), 0.1, n_calibration=n_cal).p_value
            for _ in range(N_NULL)
        ]
    )
    plain = np.array(
        [pvalue_binomial_test(_conformal_window(rng, n_cal, m), 0.1).p_value for _ in range(N_NULL)]
    )
    assert np.mean(beta <= 0.05) <= 0.05 + 0.035
    assert np.mean(plain <= 0.05) > 0.15  # the reason the calibration size matters
    for u in (0.1, 0.25, 0.5):  # super-uniform at every level
        assert np.mean(beta <= u) <= u + 0.06


def test_beta_binomial_null_rate_matches_a_simulation():
    rng = np.random.default_rng(6)
    n_cal, alpha = 39, 0.1  # ℓ = ⌈0.1 · 40⌉ − 1 = 3: P(p < alpha) = 3/40
    flagged = [np.mean(_conformal_window(rng, n_cal, 20) < alpha) for _ in range(4000)]
    assert np.mean(flagged) == pytest.approx(3 / 40, abs=0.006)
    r = pvalue_binomial_test(np.full(20, 0.5), alpha, n_calibration=n_cal)
    assert r.details["null_rate"] == pytest.approx(3 / 40)


# --- power: a planted shift is found -------------------------------------------------------------------
def test_every_test_detects_a_planted_shift():
    rng = np.random.default_rng(7)
    ref, win = _blobs(rng, 300), _blobs(rng, 60, shift=0.8)
    assert mmd_test(ref, win, n_permutations=99).p_value <= 0.01
    c = classifier_test(ref, win, n_permutations=49)
    assert c.p_value <= 0.02 and c.effect > 0.65
    clusters = ReferenceClusters(6).fit(ref)
    h = histogram_test(clusters, win, n_permutations=199)
    assert h.p_value <= 0.01 and h.details["findings"]
    cal = rng.normal(size=300)
    p = conformal_p_values(cal, rng.normal(size=60) + 1.5)
    assert pvalue_binomial_test(p, 0.05, n_calibration=300).p_value < 1e-3
    assert pvalue_ks_test(p, n_calibration=300).p_value < 1e-3


def test_classifier_scores_point_at_the_images_that_drive_the_shift():
    rng = np.random.default_rng(8)
    ref = _blobs(rng, 300)
    win = np.concatenate([_blobs(rng, 50), _blobs(rng, 10, shift=3.0)])
    r = classifier_test(ref, win, n_permutations=19)
    top = np.argsort(-r.arrays["window_scores"])[:10]
    assert np.mean(top >= 50) >= 0.8


def test_histogram_findings_name_the_cluster_that_grew():
    rng = np.random.default_rng(9)
    centers = np.eye(8, dtype=np.float32)[:4] * 6
    ref = np.concatenate([c + rng.normal(size=(100, 8)).astype(np.float32) * 0.3 for c in centers])
    ids = [f"train/{i}.jpg" for i in range(ref.shape[0])]
    clusters = ReferenceClusters(4).fit(ref, ids=ids)
    win = np.concatenate(
        [
            c + rng.normal(size=(n, 8)).astype(np.float32) * 0.3
            for c, n in zip(centers, (10, 10, 10, 70), strict=True)
        ]
    )
    r = histogram_test(clusters, win, n_permutations=199)
    assert r.p_value < 0.01
    grown = clusters.assign(centers[3:4])[0]
    assert r.details["findings"][0].startswith(f"cluster {grown} (like train/")
    assert "grew from" in r.details["findings"][0] and r.details["findings"][0].endswith("to 70.0 %")


# --- numeric routines against references --------------------------------------------------------------
def test_mmd_statistic_matches_the_textbook_formula():
    rng = np.random.default_rng(10)
    x, y = _blobs(rng, 30), _blobs(rng, 20, shift=0.3)
    r = mmd_test(x, y, n_permutations=0, n_bootstrap=0, max_reference=None)
    s = r.details["bandwidth"]
    x, y = x.astype(np.float64), y.astype(np.float64)
    k = lambda a, b: np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * s * s))  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    ref = (kxx.sum() - 30) / (30 * 29) + (kyy.sum() - 20) / (20 * 19) - 2 * kxy.mean()
    assert r.statistic == pytest.approx(ref, rel=1e-6)
    z = np.concatenate([x, y]).astype(np.float64)
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    assert s == pytest.approx(np.median(d[np.triu_indices(50, 1)]), rel=1e-5)


def test_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    from novelty.drift.classifier import fit_logistic

    rng = np.random.default_rng(11)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] + rng.normal(size=200) > 0).astype(float)
    w = fit_logistic(x, y[:, None], C=0.3)
    sk = LogisticRegression(C=0.3, tol=1e-10, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(w[:-1, 0], sk.coef_[0], atol=1e-5)
    assert w[-1, 0] == pytest.approx(sk.intercept_[0], abs=1e-5)


def test_auc_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score

    from novelty.drift.classifier import _auc

    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, 100)
    s = np.round(rng.normal(size=100) + y, 1)  # ties
    assert _auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_holm_matches_its_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    adj = drift.adjust_p_values(p, "holm")
    ok = p[:4]
    order = np.argsort(ok)
    expect = np.empty(4)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (4 - rank) * ok[i])
        expect[i] = min(1.0, running)
    np.testing.assert_allclose(adj[:4], expect)
    assert np.isnan(adj[4])
    np.testing.assert_allclose(drift.adjust_p_values(p, "bonferroni")[:4], np.minimum(1, ok * 4))


# --- bad inputs: clear NoveltyErrors -------------------------------------------------------------------
@pytest.mark.parametrize("test", ["mmd", "classifier"])
def test_bad_windows_raise_clear_errors(test):
    fn = {"mmd": mmd_test, "classifier": classifier_test}[test]
    ref = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(EmptyWindowError, match="empty"):
        fn(ref, np.zeros((0, 4)))
    with pytest.raises(WindowTooSmallError, match="at least 2"):
        fn(ref, np.zeros((1, 4)))
    bad = np.ones((5, 4))
    bad[2, 1] = np.nan
    with pytest.raises(NonFiniteEmbeddingsError, match="NaN"):
        fn(ref, bad)
    with pytest.raises(DimensionMismatchError, match="dimension 3"):
        fn(ref, np.ones((5, 3)))
    with pytest.raises(InvalidInputError):
        fn(ref, np.ones(5))
    with pytest.raises(InvalidInputError, match="n_permutations"):
        fn(ref, np.ones((5, 4)), n_permutations=-1)


def test_bad_p_values_raise_clear_errors():
    for fn in (pvalue_binomial_test, pvalue_ks_test):
        with pytest.raises(EmptyWindowError):
            fn([])
        with pytest.raises(WindowTooSmallError):
            fn([0.5])
        with pytest.raises(NonFiniteEmbeddingsError):
            fn([0.5, np.nan])
        with pytest.raises(InvalidInputError, match=r"\(0, 1\]"):
            fn([0.5, 1.5])


def test_reference_and_histogram_errors_are_novelty_errors():
    with pytest.raises(WindowTooSmallError, match="clusters need"):
        ReferenceClusters(8).fit(np.random.default_rng(0).normal(size=(20, 4)))
    with pytest.raises(NoveltyError, match="not fitted"):
        histogram_test(ReferenceClusters(2), np.ones((4, 4)))
    with pytest.raises(NoveltyError, match="unknown drift test"):
        DriftReference(np.random.default_rng(0).normal(size=(40, 4))).test(np.ones((4, 4)), tests=["nope"])
    with pytest.raises(InvalidInputError, match="nothing to test"):
        DriftReference(np.random.default_rng(0).normal(size=(40, 4))).test(None, None)


@pytest.mark.slow
def test_drift_is_not_imported_by_novelty():
    import subprocess
    import sys

    code = "import sys, novelty; print('novelty.drift' in sys.modules, 'sklearn' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False", "False"]


# --- windows, monitoring, multiple testing ------------------------------------------------------------
def test_parse_window():
    assert drift.parse_window("500").size == 500
    assert drift.parse_window("1d").seconds == 86400
    assert drift.parse_window("7d").seconds == 7 * 86400
    assert drift.parse_window("12h").seconds == 43200
    for bad in ("", "1", "0d", "1y", "abc"):
        with pytest.raises(InvalidInputError):
            drift.parse_window(bad)


def test_time_windows_start_at_midnight_and_skip_empty_days():
    day = 86400.0
    t = np.array([0.5, 0.2, 2.3, 2.9, 2.1]) * day + 1_700_006_400  # a midnight UTC
    wins = drift.split_windows(5, drift.parse_window("1d"), t)
    assert [w.label for w in wins] == ["2023-11-15T00:00:00Z", "2023-11-17T00:00:00Z"]
    assert wins[0].index.tolist() == [1, 0] and wins[1].index.tolist() == [4, 2, 3]
    with pytest.raises(drift.DriftError, match="timestamp"):
        drift.split_windows(5, drift.parse_window("1d"), np.array([1.0, np.nan, 2, 3, 4]))
    counted = drift.split_windows(5, drift.parse_window("2"), t)
    assert [w.index.tolist() for w in counted] == [[1, 0], [4, 2], [3]]


def test_monitor_finds_the_shifted_windows_and_holds_the_family_wise_error():
    rng = np.random.default_rng(13)
    ref = DriftReference(
        _blobs(rng, 400), n_clusters=6, permutations={"mmd": 99, "classifier": 19, "histogram": 199}
    )
    stream = np.concatenate([_blobs(rng, 200), _blobs(rng, 100, shift=1.0)])
    cal = rng.normal(size=500)
    p = conformal_p_values(cal, np.concatenate([rng.normal(size=200), rng.normal(size=100) + 2]))
    ref.n_calibration = 500
    run = drift.monitor(ref, stream, p_values=p, window="50", tests=["pvalue-binomial", "mmd", "histogram"])
    assert [w.drift(0.05) for w in run.windows] == [False] * 4 + [True] * 2
    assert run.first_drift is not None and run.first_drift.label.startswith("#5")
    js = run.to_json()
    assert js["family_size"] == 18 and js["first_drift"].startswith("#5")
    assert "DRIFT" in run.table()
    assert run.thresholds["mmd"]["threshold"] > 0 and run.windows[-1].beyond_threshold["mmd"]
    assert not any(run.windows[0].beyond_threshold.values())


def test_what_is_missing_recovers_planted_clusters():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(14)
    ref = DriftReference(_blobs(rng, 200), ids=[f"t{i}" for i in range(200)])
    centers = np.zeros((3, 8), dtype=np.float32)
    centers[0, 3], centers[1, 4], centers[2, 5] = 8, 8, 8
    truth = np.repeat([0, 1, 2], [30, 20, 10])
    win = np.concatenate(
        [centers[truth] + rng.normal(size=(60, 8)).astype(np.float32) * 0.3, _blobs(rng, 40)]
    )
    novel = np.r_[np.ones(60, bool), np.zeros(40, bool)]
    times = np.arange(100) * 3600.0
    out = drift.what_is_missing(ref, win, novel=novel, times=times, keys=[f"k{i}" for i in range(100)])
    assert [c.size for c in out] == [30, 20, 10]
    labels = np.empty(60, int)
    for c in out:
        labels[c.members] = c.cluster
    assert adjusted_rand_score(truth, labels) == 1.0
    c = out[2]
    assert c.first_seen == 50 * 3600.0 and c.last_seen == 59 * 3600.0
    assert (
        c.medoid in c.members
        and c.distance > 5
        and len(c.neighbors) == 5
        and c.neighbors[0][0].startswith("t")
    )
    assert drift.what_is_missing(ref, win, novel=np.zeros(100, bool)) == []


def test_prediction_test_and_recommendation_rule():
    ref_pred = ["dry"] * 50 + ["wet"] * 50
    same = drift.prediction_test(ref_pred, ["dry"] * 25 + ["wet"] * 25)
    moved = drift.prediction_test(ref_pred, ["dry"] * 45 + ["wet"] * 5)
    assert same.p_value > 0.5 and moved.p_value < 0.001 and moved.effect == pytest.approx(0.4)

    def run_of(drifts: list[bool], pred: drift.DriftTestResult | None) -> drift.DriftRun:
        ws = []
        for i, d in enumerate(drifts):
            w = drift.WindowResult(f"w{i}", 50, None, None)
            w.tests = {"mmd": same}
            w.adjusted = {"mmd": 0.001 if d else 0.9}
            w.predictions = pred
            ws.append(w)
        return drift.DriftRun(ws, drift.parse_window("50"), ("mmd",), "holm", 0.05, {}, {})

    assert drift.recommend(run_of([False, True, True], moved)).action == "retrain now"
    assert drift.recommend(run_of([False, False, True], same)).action == "keep watching"
    assert drift.recommend(run_of([True, False, False], same)).action == "keep watching"
    assert drift.recommend(run_of([True, False, False, False], same)).action == "fine"
    assert drift.recommend(run_of([False, True, True], None)).action == "retrain now"
    assert drift.recommend(run_of([False, False, True], None)).action == "keep watching"


# --- real embeddings ------------------------------------------------------------------------------------
def test_real_textile_defects_are_detected_and_clean_windows_are_not(textile_embeddings):
    """Real backbone embeddings (cached): a detector fitted on nominal textile images; a window of held-out
    nominal images does not drift after Holm's correction, a window of global defects drifts on every test."""
    import novelty

    nominal = textile_embeddings["nominal"]
    det = novelty.NoveltyDetector(calibration_fraction=0.3).fit_embeddings(nominal[:700])
    ref = DriftReference.from_detector(
        det, n_clusters=8, permutations={"mmd": 99, "classifier": 19, "histogram": 199}
    )
    assert ref.n_calibration == det.calibrator_.n and len(ref) == det.index_.ntotal
    clean, defects = nominal[700:760], textile_embeddings["global"][:60]
    stream = np.concatenate([clean, defects])
    p = det.score_embeddings(stream).p_value
    run = drift.monitor(ref, stream, p_values=p, window="60")
    assert [w.drift(0.05) for w in run.windows] == [False, True]
    assert all(r.p_value < 0.05 for r in run.windows[1].tests.values())
    assert run.windows[1].tests["classifier"].effect > 0.9


def test_drift_by_lag_finds_the_horizon_of_a_stream_that_moves_away():
    rng = np.random.default_rng(15)
    day = 86400.0
    # ten daily windows whose mean walks away by 0.2 per day along one axis: far-apart windows differ
    walk = []
    for d in range(10):
        b = _blobs(rng, 40)
        b[:, 0] += 0.2 * d
        walk.append(b)
    x = np.concatenate(walk).astype(np.float16)
    t = np.repeat(np.arange(10) * day, 40) + 3600.0
    wins = drift.split_windows(400, drift.parse_window("1d"), t)
    curve = drift.drift_by_lag(x, wins, n_permutations=99, max_pairs_per_lag=4)
    assert curve.unit == "days" and curve.lags[0] == 1.0 and curve.lags[-1] == 9.0
    assert curve.horizon is not None and 3.0 <= curve.horizon <= 7.0
    assert curve.share_different[0] <= 0.5 and curve.share_different[-1] == 1.0
    assert curve.mean_mmd2[-1] > curve.mean_mmd2[0]
    still = np.concatenate([_blobs(rng, 40) for _ in range(10)])
    assert drift.drift_by_lag(still, wins, n_permutations=99, max_pairs_per_lag=4).horizon is None
