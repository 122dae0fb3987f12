"""The audit of auto-accepted answers reports what it was sized for: the one-sided exact (Clopper–Pearson)
upper bound on the rule's error rate at the export's δ, so a clean audit of 45 reads "≤ 5.0%"."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from novelty.flywheel.labels.labelling import audit_result, audit_size, audit_upper_bound


@pytest.mark.parametrize(("wrong", "n", "delta"), [(0, 45, 0.1), (1, 45, 0.1), (2, 45, 0.1), (0, 230, 0.1),
                                                   (3, 77, 0.05), (0, 1, 0.1), (10, 20, 0.01)])  # fmt: skip
def test_the_upper_bound_is_the_clopper_pearson_one_against_scipy(wrong, n, delta):
    reference = stats.beta.ppf(1 - delta, wrong + 1, n - wrong)  # the exact one-sided upper limit
    assert audit_upper_bound(wrong, n, delta) == pytest.approx(reference, abs=1e-9)
    if wrong == 0:
        assert audit_upper_bound(0, n, delta) == pytest.approx(1 - delta ** (1 / n), abs=1e-12)
    assert audit_upper_bound(n, n, delta) == 1.0


@pytest.mark.parametrize(("eps", "delta"), [(0.05, 0.1), (0.01, 0.1), (0.02, 0.05), (0.1, 0.2)])
def test_an_audit_of_audit_size_bounds_the_error_rate_by_eps_when_clean(eps, delta):
    n = audit_size(10_000, eps, delta)
    assert audit_upper_bound(0, n, delta) <= eps < audit_upper_bound(0, n - 1, delta)
    assert audit_upper_bound(1, n, delta) > eps  # one error: no longer vouched for


def _export(tmp_path, n: int, **section):
    audit = [{"id": f"i{k}", "sha256": "0" * 64, "model_label": "dry"} for k in range(n)]
    (tmp_path / "export.json").write_text(json.dumps({"auto_accept": {"audit": audit, **section}}))


def test_a_clean_audit_of_45_reads_at_most_5_percent(tmp_path):
    _export(tmp_path, 45, audit_delta=0.1, audit_risk=0.05, audit_size=45)
    people = {f"i{k}": "dry" for k in range(45)}
    res = audit_result(tmp_path, people)
    assert res.n == 45 and res.wrong == 0 and res.upper == pytest.approx(0.0499, abs=1e-4) and res.vouched
    assert "≤ 5.0% at 90% confidence (one-sided exact), within the ε = 0.05" in res.describe()
    assert res.to_json()["upper"] == res.upper and res.to_json()["vouched"] is True
    lo, hi = res.ci  # the two-sided Wilson interval stays, for reference: wider than what was asked
    assert lo == 0.0 and hi > 0.07
    people["i3"] = "wet"
    one = audit_result(tmp_path, people)
    assert one.upper == pytest.approx(0.084, abs=1e-3) and one.vouched is False
    assert "not within the ε = 0.05" in one.describe()


def test_a_share_audit_uses_the_default_delta(tmp_path):
    from novelty.trust import DEFAULT_DELTA

    _export(tmp_path, 10, audit_share=0.5)
    res = audit_result(tmp_path, {f"i{k}": "dry" for k in range(10)})
    assert res.delta == DEFAULT_DELTA and res.risk is None and res.vouched is None
    assert res.upper == pytest.approx(1 - DEFAULT_DELTA ** (1 / 10))
    assert math.isclose(res.to_json()["delta"], DEFAULT_DELTA)
