"""ConditionHead on real embeddings: accuracy, calibrated probabilities, string/int labels, round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import novelty
from novelty.errors import InvalidInputError, NotFittedError
from novelty.head import T_MAX, T_MIN, fit_temperature


@pytest.fixture(scope="module")
def labelled(textile_embeddings):
    e = textile_embeddings
    train_x = np.concatenate([e["nominal"][:300], e["global"][:100], e["local"][:100]])
    train_y = np.array(["nominal"] * 300 + ["global"] * 100 + ["local"] * 100)
    test_x = np.concatenate([e["nominal"][700:], e["global"][100:], e["local"][100:]])
    test_y = np.array(["nominal"] * 300 + ["global"] * 100 + ["local"] * 100)
    return train_x, train_y, test_x, test_y


def test_binary_head_separates_nominal_from_global_defects(textile_embeddings):
    e = textile_embeddings
    x = np.concatenate([e["nominal"][:300], e["global"][:100]])
    y = np.array([0] * 300 + [1] * 100)
    head = novelty.ConditionHead(seed=1).fit(x, y)
    assert head.classes_ == [0, 1]
    xt = np.concatenate([e["nominal"][700:], e["global"][100:]])
    yt = np.array([0] * 300 + [1] * 100)
    assert (np.array(head.predict(xt)) == yt).mean() >= 0.95
    proba = head.predict_proba(xt)
    assert proba.shape == (400, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert T_MIN <= head.temperature_ <= T_MAX


@pytest.mark.slow
def test_multiclass_head_with_string_labels(labelled):
    train_x, train_y, test_x, test_y = labelled
    head = novelty.ConditionHead().fit(train_x, train_y)
    assert head.classes_ == ["global", "local", "nominal"]
    pred = np.array(head.predict(test_x))
    acc = {c: float((pred[test_y == c] == c).mean()) for c in head.classes_}
    print("per-class accuracy:", acc)
    assert acc["global"] >= 0.9 and acc["nominal"] >= 0.7


def test_temperature_scaling_fixes_overconfidence():
    """Logits that are 5× too confident for their labels get a temperature near 5."""
    rng = np.random.default_rng(0)
    true_logits = torch.from_numpy(rng.normal(size=(4000, 3)) * 1.5)
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    t = fit_temperature(true_logits * 5.0, labels)
    assert 4.0 < t < 6.0


def test_round_trip_through_state(labelled):
    train_x, train_y, test_x, _ = labelled
    head = novelty.ConditionHead(hidden=32).fit(train_x, train_y)
    back = novelty.ConditionHead.from_state(head.get_params(), head.state_meta(), head.state_arrays())
    np.testing.assert_array_equal(head.predict_proba(test_x), back.predict_proba(test_x))


def test_errors(labelled):
    train_x = labelled[0]
    with pytest.raises(NotFittedError):
        novelty.ConditionHead().predict(train_x)
    with pytest.raises(InvalidInputError, match="two classes"):
        novelty.ConditionHead().fit(train_x[:10], ["a"] * 10)
    with pytest.raises(InvalidInputError, match="one entry per embedding"):
        novelty.ConditionHead().fit(train_x[:10], ["a", "b"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden": -1}, "hidden must be an integer ≥ 0"),
        ({"dropout": 1.5}, r"dropout must lie in \[0, 1\)"),
        ({"max_epochs": 0}, "max_epochs must be an integer ≥ 1"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"val_fraction": 0.0}, r"val_fraction must lie in \(0, 1\)"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_bad_arguments_fail_in_the_constructor(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        novelty.ConditionHead(**kwargs)


def test_labels_must_be_complete_and_of_one_kind(labelled):
    train_x = labelled[0][:6]
    with pytest.raises(InvalidInputError, match=r"missing value\(s\).*position 2"):
        novelty.ConditionHead().fit(train_x, ["a", "b", None, "a", "b", "a"])
    with pytest.raises(InvalidInputError, match="must all be strings or all numbers"):
        novelty.ConditionHead().fit(train_x, ["a", 1, "a", 1, "a", 1])
    with pytest.raises(InvalidInputError, match="missing"):
        novelty.ConditionHead().fit(train_x, [0.0, 1.0, float("nan"), 0.0, 1.0, 0.0])


def test_from_state_checks_its_metadata(labelled):
    head = novelty.ConditionHead(max_epochs=2).fit(labelled[0][250:350], labelled[1][250:350])
    meta = head.state_meta()
    for bad, message in (
        ({**meta, "temperature": 0.0}, "temperature"),
        ({**meta, "classes": ["only"]}, "classes"),
        ({**meta, "dim": "1280"}, "dim"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            novelty.ConditionHead.from_state(head.get_params(), bad, head.state_arrays())
    with pytest.raises(InvalidInputError, match=r"unknown parameter\(s\) width"):
        novelty.ConditionHead.from_state({"width": 3}, meta, head.state_arrays())
