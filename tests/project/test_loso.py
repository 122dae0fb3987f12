"""The leave-one-scenario-out protocol: its fast scores equal the registered scorers', the choice never sees
the held-out scenario, and the report is written."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.ood import loso
from novelty.scorers import create_scorer


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def toy_split(rng: np.random.Generator, labels: bool) -> loso.Split:
    centres = rng.normal(size=(4, 16)) * 2
    y = rng.integers(0, 3, 500)
    x = unit(centres[y] + rng.normal(size=(500, 16)))
    return loso.Split(
        fit=x[:300],
        cal=x[300:400],
        labels=y[:300] if labels else None,
        test_in=x[400:],
        test_out={"new": unit(centres[3] + rng.normal(size=(60, 16)))},
        fit_rows=np.arange(300),
        cal_rows=np.arange(300, 400),
    )


@pytest.mark.parametrize("labels", [False, True])
def test_fast_scores_equal_the_registered_scorers(rng, labels):
    split = toy_split(rng, labels)
    sets = [split.cal, split.test_out["new"]]
    fast = loso.fast_single_scores(split, sets)
    assert set(fast) == {sp for sp in loso.single_specs() if labels or not loso.uses_labels(sp)}
    for spec, got in fast.items():
        s = create_scorer(spec[0], **dict(spec[1])).fit(split.fit, split.labels)
        for a, x in zip(got, sets, strict=True):
            np.testing.assert_allclose(a, s.score(x), rtol=1e-4, atol=1e-6, err_msg=loso.spec_label(spec))


def test_methods_and_combinations_are_measured(rng):
    split = toy_split(rng, True)
    res = loso.score_methods(split, 0.05)
    assert "knn(kth,k=5)" in res and "knn(kth,k=5) + knn-local(k=10)" in res
    assert all(0.0 <= m["mean_auroc"] <= 1.0 and 0.0 <= m["false_alarm"] <= 1.0 for m in res.values())
    assert not loso.label_free("knn(mean,k=10) + logit(l2=0.0001,score=max-logit)")
    assert loso.label_free("knn(mean,k=10) + knn-local(k=20)")
    free = loso.score_methods(toy_split(np.random.default_rng(1), False), 0.05)
    assert all(loso.label_free(m) for m in free)


def test_the_choice_never_sees_the_held_out_scenario():
    def cand(a: float, b: float) -> dict:
        return {"mean_auroc": a, "false_alarm": b}

    k1, k2, k3 = (
        ("bb", "final", "knn(kth,k=5)"),
        ("bb", "final", "knn-local(k=10)"),
        ("bb", "final", "logit(x)"),
    )
    candidates = {
        "a": {k1: cand(0.9, 0.05), k2: cand(0.8, 0.05)},
        "b": {k1: cand(0.9, 0.05), k2: cand(0.8, 0.05)},
        "h": {k1: cand(0.1, 0.05), k2: cand(1.0, 0.05), k3: cand(1.0, 0.05)},
    }
    assert loso.choose(candidates, ["a", "b"]) == (k1, pytest.approx(0.9))
    assert loso.choose(candidates, ["a", "b", "h"])[0] == k2  # only with h does k2 win
    # a candidate missing from a training scenario cannot be chosen
    assert loso.choose(candidates, ["h"], labels=True)[0] == k2


def test_scenarios_share_images_across_pools():
    near, ood = loso.loso_scenarios(["fmnist-near", "fmnist-ood"])
    assert set(near.fit.index) <= set(ood.fit.index)
    assert near.fit.labels is not None and len(near.fit.labels) == len(near.fit)
    assert not any(k.endswith("-s3") for sc in loso.loso_scenarios(["street"]) for k in sc.test_out)


def test_todays_default_is_a_candidate_label():
    assert loso.TODAY[2] in {loso.spec_label(sp) for sp in loso.single_specs()}
