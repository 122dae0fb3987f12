"""A promotion refused by the gate says which check failed, with the numbers the comparison recorded for it and
the ``novelty compare`` option that sets its threshold — on the command line and from the library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from comparison_support import artifact_id  # tests/comparison_support.py

import novelty
from novelty.cli import EXIT_FAILURE, EXIT_OK, main
from novelty.flywheel.comparison.compare import Comparison, GateRule, ModelOutputs, compare_outputs
from novelty.flywheel.registry.store import PromotionRefusedError, Registry

CLASSES = ["dry", "wet"]


@pytest.fixture(scope="module")
def detectors(tmp_path_factory, embedder, textile_embeddings) -> list[Path]:
    x = textile_embeddings["nominal"]
    out = tmp_path_factory.mktemp("detectors")
    return [
        novelty.NoveltyDetector(embedder=embedder, calibration_fraction=0.3, seed=i)
        .fit_embeddings(x[lo:hi])
        .save(out / f"det{i}")
        for i, (lo, hi) in enumerate([(0, 150), (40, 190)])
    ]


def small_gain_comparison(champion: Path, challenger: Path, min_gain: float) -> Comparison:
    """Heads on 1000 images (500 clean, 500 snow): the champion is right on 800, the challenger on those and
    12 more: a gain of +0.012, significant (McNemar p = 0.0005), no condition worse, the same false alarms."""
    rng = np.random.default_rng(0)
    n = 1000
    conditions = ["clean"] * 500 + ["snow"] * 500
    y = rng.choice(CLASSES, size=n)
    other = np.where(y == "dry", "wet", "dry")
    right1 = np.ones(n, dtype=bool)
    right1[rng.choice(n, 200, replace=False)] = False
    right2 = right1.copy()
    right2[rng.choice(np.flatnonzero(~right1), 12, replace=False)] = True
    p = rng.uniform(size=n)
    conf = rng.uniform(0.5, 1.0, size=n)
    o1 = ModelOutputs(p, 0.05, np.where(right1, y, other), conf, CLASSES)
    o2 = ModelOutputs(p.copy(), 0.05, np.where(right2, y, other), conf, CLASSES)
    rule = GateRule(min_gain=min_gain)
    rows, checks = compare_outputs(o1, o2, y, conditions, n_boot=200, seed=0, rule=rule)
    return Comparison(
        rows=rows,
        checks=checks,
        champion={"artifact_id": artifact_id(champion), "alpha": 0.05},
        challenger={"artifact_id": artifact_id(challenger), "alpha": 0.05},
        settings={"nominal": ["clean"], "n_boot": 200, "seed": 0, "level": 0.95, "gate": rule.to_json()},
    )


def test_promote_below_min_gain_names_the_check_and_its_numbers(tmp_path, detectors, capsys):
    root = tmp_path / "reg"
    assert main(["register", str(root), str(detectors[0]), "--no-load"]) == EXIT_OK
    assert main(["register", str(root), str(detectors[1]), "--alias", "challenger", "--no-load"]) == EXIT_OK
    assert main(["promote", str(root), "1"]) == EXIT_OK
    c = small_gain_comparison(detectors[0], detectors[1], min_gain=0.02)
    assert [ch.name for ch in c.checks if ch.passed is False] == ["gain"]  # better, but not by enough
    path = c.save(tmp_path / "comparison.json")
    Registry.open(root).record_comparison(path)
    capsys.readouterr()
    assert main(["promote", str(root), "challenger", "--comparison", str(path)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("novelty promote: error: version 0002 not promoted: ")
    assert (
        "did not pass the gate: FAIL gain: the accuracy gain +0.012 (0.800 → 0.812) is below the minimum gain "
        "+0.020 (--min-gain)"
    ) in err
    assert "significant" not in err and "false alarms" not in err  # the checks that passed are not blamed
    assert "--force --reason" in err
    assert Registry.open(root).alias("champion") == "0001"
    # the library says the same
    with pytest.raises(
        PromotionRefusedError, match=r"FAIL gain: the accuracy gain \+0\.012 .* \(--min-gain\)"
    ):
        Registry.open(root).promote("challenger", comparison=path)


def test_a_failed_check_names_the_option_that_sets_it(tmp_path, detectors):
    c = small_gain_comparison(detectors[0], detectors[1], min_gain=0.02)
    assert [ch.failure() for ch in c.checks if ch.passed is False] == [
        "FAIL gain: the accuracy gain +0.012 (0.800 → 0.812) is below the minimum gain +0.020 (--min-gain)"
    ]
    worse = next(ch for ch in c.checks if ch.name == "no condition worse")
    failed = type(worse)(worse.name, False, "accuracy falls by more than 0.02 on snow -0.030", worse.values)
    assert (
        failed.failure()
        == "FAIL no condition worse: accuracy falls by more than 0.02 on snow -0.030 (--margin)"
    )
    # a gain check without its numbers (a file from before they were recorded) says what it recorded
    bare = type(worse)("gain", False, "accuracy 0.800 → 0.812 (+0.012); needs ≥ +0.020")
    assert bare.failure() == "FAIL gain: accuracy 0.800 → 0.812 (+0.012); needs ≥ +0.020 (--min-gain)"
