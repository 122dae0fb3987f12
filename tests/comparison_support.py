"""Comparison files as ``novelty compare`` writes them, for registry tests: the gate really runs
(:func:`novelty.flywheel.comparison.compare.compare_outputs`) on seeded p-values of a nominal and a novel condition, so a
file passes or fails by its numbers, and the artifact ids name the detectors given."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from novelty.flywheel.comparison.compare import Comparison, GateRule, ModelOutputs, compare_outputs


def artifact_id(path: Path) -> str:
    return (Path(path) / "MANIFEST.sha256").read_text().split()[0]


def make_comparison(
    champion: Path | None, challenger: Path, *, passed: bool = True, seed: int = 0
) -> Comparison:
    """A comparison of two detectors without a head on 150 clean and 150 snow images: the challenger ranks snow
    far above clean when ``passed``, like the champion otherwise (gain 0: the gate fails)."""
    rng = np.random.default_rng(seed)
    n = 150
    p_champion = rng.uniform(size=2 * n)
    p_challenger = p_champion.copy()
    if passed:
        p_challenger[n:] = rng.uniform(0.0, 0.01, size=n)  # snow: novel to the challenger
    conditions = ["clean"] * n + ["snow"] * n
    o1, o2 = ModelOutputs(p_value=p_champion, alpha=0.05), ModelOutputs(p_value=p_challenger, alpha=0.05)
    rule = GateRule()
    rows, checks = compare_outputs(o1, o2, conditions, conditions, n_boot=200, seed=seed, rule=rule)
    c = Comparison(
        rows=rows,
        checks=checks,
        champion={"artifact_id": artifact_id(champion) if champion else None, "alpha": 0.05},
        challenger={"artifact_id": artifact_id(challenger), "alpha": 0.05},
        settings={"nominal": ["clean"], "n_boot": 200, "seed": seed, "level": 0.95, "gate": rule.to_json()},
    )
    assert c.passed is passed, c.reasons
    return c


def write_comparison(
    path: Path, champion: Path | None, challenger: Path, *, passed: bool = True, registry=None
) -> Path:
    """:func:`make_comparison` saved to ``path`` (and recorded in ``registry`` when given)."""
    out = make_comparison(champion, challenger, passed=passed).save(path)
    if registry is not None:
        registry.record_comparison(out)
    return out
