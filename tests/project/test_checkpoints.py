"""The shipped windshield detector loads (verified, without retraining) and reproduces its model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import novelty
from novelty.datasets.windshield import windshield_scenario

ROOT = Path(__file__).resolve().parents[2] / "checkpoints"


pytestmark = pytest.mark.slow  # reproduces the shipped detector: embeds the windshield scenario


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((ROOT / "windshield_metrics.json").read_text())


@pytest.fixture(scope="module")
def reproduced(card):
    from novelty.training.windshield import Embedded, evaluate

    det = novelty.load(ROOT / "windshield")
    sc = windshield_scenario(seed=card["seed"])
    emb = det.embedder
    embedded = Embedded(
        fit_x=np.empty((0, emb.dim), np.float32),
        fit_y=np.empty(0, np.int64),
        fit_groups=np.empty(0, np.int64),
        test_x=emb.embed(sc.test.images),
        test_y=sc.test.labels,
        production={name: (emb.embed(cs.images), cs.labels) for name, cs in sc.production.items()},
    )
    return det, evaluate(det, embedded, alpha=card["alpha"])


def test_checkpoint_is_a_complete_detector(reproduced, card):
    det, _ = reproduced
    assert [s.name for s in det.scorers_] == ["knn", "autoencoder"]
    assert det.head_ is not None and det.head_.classes_ == ["dry", "wet"]
    assert det.calibrator_.n == card["frames"]["calibration"]
    assert det.alpha == card["alpha"]


def test_checkpoint_reproduces_the_model_card(reproduced, card):
    _, got = reproduced
    want = card["metrics"]
    for condition, row in want.items():
        for key in ("head_accuracy", "flagged"):
            assert got[condition][key] == pytest.approx(row[key], abs=0.03), (condition, key)
        for scorer, value in row.get("auroc", {}).items():
            assert got[condition]["auroc"][scorer] == pytest.approx(value, abs=0.01), (condition, scorer)


def test_issue_targets_hold(reproduced):
    """Clean held-out frames: head accuracy ≥ 0.95 and ≤ 7 % flagged; tunnel and ice ≥ 90 % flagged."""
    _, got = reproduced
    assert got["clean"]["head_accuracy"] >= 0.95
    assert got["clean"]["flagged"] <= 0.07
    assert got["tunnel"]["flagged"] >= 0.9 and got["ice"]["flagged"] >= 0.9
