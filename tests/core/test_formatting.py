"""One rule for p-values on every page and table (:func:`novelty.formatting.format_p_value`): the rule itself,
and the drift table, the drift recommendation and the batch report's cards written by it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from novelty import drift
from novelty.batch.report import build_report
from novelty.formatting import format_p_value


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (1.0, "1"),
        (0.5, "0.5"),
        (0.123, "0.12"),
        (0.0462, "0.046"),  # beside a level of 0.05 it never reads 0.05
        (0.0496, "0.05"),
        (0.01, "0.01"),
        (0.00314, "0.0031"),
        (2.4e-7, "2.4e-07"),
        (0.0, "0"),
        (np.float32(0.25), "0.25"),
        ("0.3", "0.3"),
        (math.nan, "—"),
        (math.inf, "—"),
        (None, "—"),
        ("n/a", "—"),
        (object(), "—"),
    ],
)
def test_format_p_value(p, text):
    assert format_p_value(p) == text


def _run(adjusted: float, raw: float) -> drift.DriftRun:
    result = drift.DriftTestResult("mmd", 0.01, raw, 0.01, "MMD²", 0.0, 0.02, 50, 100)
    w = drift.WindowResult("#0", 50, None, None)
    w.tests, w.adjusted = {"mmd": result}, {"mmd": adjusted}
    return drift.DriftRun([w], drift.parse_window("50"), ("mmd",), "holm", 0.05, {}, {})


def test_the_drift_table_and_recommendation_write_p_values_by_the_rule():
    assert "0.01 (p=0.046)*" in _run(0.0462, 0.0154).table()
    assert "(p=—)" in _run(math.nan, math.nan).table()
    moved = drift.prediction_test(["dry"] * 50 + ["wet"] * 50, ["dry"] * 35 + ["wet"] * 15)
    run = _run(0.001, 0.001)
    run.windows[0].predictions = moved
    reasons = " ".join(drift.recommend(_run_of_three(run)).reasons)
    assert f"p={format_p_value(moved.p_value)})" in reasons


def _run_of_three(run: drift.DriftRun) -> drift.DriftRun:
    w = run.windows[0]
    quiet = drift.WindowResult("#q", 50, None, None)
    quiet.tests, quiet.adjusted, quiet.predictions = w.tests, {"mmd": 0.9}, w.predictions
    return drift.DriftRun([quiet, w, w], run.window, run.tests, "holm", 0.05, {}, {})


def test_the_batch_report_writes_each_cards_p_value_by_the_rule(tmp_path):
    rows = [
        {
            "key": f"img{i}.jpg",
            "score": 3.0 - i,
            "p_value": p,
            "novelty": 1 - p,
            "is_novel": p < 0.05,
            "error": "",
        }
        for i, p in enumerate([0.00314, 0.0462, 0.123])
    ]
    html = build_report(rows, tmp_path / "r.html", load_thumbnail=lambda row: None).read_text("utf-8")
    for p in ("0.0031", "0.046", "0.12"):
        assert f"p-value <b>{p}</b>" in html
