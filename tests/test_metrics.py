from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from novelty.errors import InvalidInputError
from novelty.metrics import auroc, flagged_share


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = np.round(rng.normal(size=120), 1)  # with ties
    b = np.round(rng.normal(0.7, size=80), 1)
    ref = roc_auc_score(np.r_[np.zeros(a.size), np.ones(b.size)], np.r_[a, b])
    assert auroc(a, b) == pytest.approx(ref, abs=1e-12)


def test_auroc_hand_cases():
    assert auroc([0, 1], [2, 3]) == 1.0
    assert auroc([2, 3], [0, 1]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    with pytest.raises(InvalidInputError):
        auroc([], [1])


def test_flagged_share():
    assert flagged_share(np.array([0.01, 0.04, 0.05, 0.5]), 0.05) == 0.5
