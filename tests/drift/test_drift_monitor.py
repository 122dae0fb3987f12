"""novelty.drift: windows and monitoring with multiple testing, clusters of what is missing, the recommendation
rule, and real embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from drift_support import blobs  # tests/drift_support.py

from novelty import drift
from novelty.calibration import conformal_p_values
from novelty.drift import (
    DriftReference,
)
from novelty.errors import InvalidInputError


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
        blobs(rng, 400), n_clusters=6, permutations={"mmd": 99, "classifier": 19, "histogram": 199}
    )
    stream = np.concatenate([blobs(rng, 200), blobs(rng, 100, shift=1.0)])
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
    ref = DriftReference(blobs(rng, 200), ids=[f"t{i}" for i in range(200)])
    centers = np.zeros((3, 8), dtype=np.float32)
    centers[0, 3], centers[1, 4], centers[2, 5] = 8, 8, 8
    truth = np.repeat([0, 1, 2], [30, 20, 10])
    win = np.concatenate([centers[truth] + rng.normal(size=(60, 8)).astype(np.float32) * 0.3, blobs(rng, 40)])
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
        b = blobs(rng, 40)
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
    still = np.concatenate([blobs(rng, 40) for _ in range(10)])
    assert drift.drift_by_lag(still, wins, n_permutations=99, max_pairs_per_lag=4).horizon is None
