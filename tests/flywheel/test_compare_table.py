"""``novelty compare`` prints its table within 100 columns, with every number of every row: champion,
challenger, difference and interval of each metric, and the trusted-but-wrong counts."""

from __future__ import annotations

import re

import numpy as np
import pytest

from novelty.flywheel.comparison.compare import (
    Comparison,
    GateRule,
    ModelOutputs,
    compare_outputs,
    trusted_wrong,
)

CLASSES = ["dry", "wet"]


def realistic_comparison(seed: int = 0, *, head: bool = True) -> Comparison:
    """Heads with a trust decision, five conditions (one with a long name) and a new slice: every metric of the
    table, the slices' rows and the trusted-but-wrong counts."""
    rng = np.random.default_rng(seed)
    conditions = (
        ["clean"] * 300
        + ["rain"] * 120
        + ["snow"] * 120
        + ["tunnel"] * 80
        + ["fog at night on a wet mountain road"] * 80
    )
    n = len(conditions)
    y = rng.choice(CLASSES, size=n)
    nominal = np.array([c == "clean" for c in conditions])
    other = np.where(y == "dry", "wet", "dry")

    def side(novel_p: float, right_clean: float, right_other: float, trust: float) -> ModelOutputs:
        p = np.where(nominal, rng.uniform(size=n), rng.uniform(0, novel_p, size=n))
        if not head:
            return ModelOutputs(p, 0.05)
        right = rng.uniform(size=n) < np.where(nominal, right_clean, right_other)
        return ModelOutputs(
            p,
            0.05,
            np.where(right, y, other),
            rng.uniform(0.5, 1.0, size=n),
            CLASSES,
            rng.uniform(size=n) < trust,
            0.05,
            rng.uniform(size=n),
        )

    o1, o2 = side(0.3, 0.93, 0.7, 0.7), side(0.1, 0.94, 0.85, 0.75)
    slices = ["test"] * (n - 100) + ["new"] * 100
    rows, checks = compare_outputs(o1, o2, y, conditions, slices=slices, n_boot=200, seed=seed)
    return Comparison(
        rows=rows,
        checks=checks,
        champion={"artifact_id": None, "alpha": 0.05},
        challenger={"artifact_id": None, "alpha": 0.05},
        settings={
            "nominal": ["clean"],
            "n_boot": 200,
            "seed": seed,
            "level": 0.95,
            "gate": GateRule().to_json(),
        },
        trusted_wrong=trusted_wrong(o1, o2, y, conditions, slices=slices) if head else None,
    )


@pytest.mark.parametrize("head", [True, False], ids=["with a head", "novelty only"])
def test_the_comparison_table_fits_100_columns_and_keeps_every_number(head):
    c = realistic_comparison(head=head)
    text = c.table()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100, "\n" + text
    assert len(c.rows) == 8 and len({m for r in c.rows for m in r.metrics}) == (6 if head else 2)
    assert "95 % interval" in lines[0]
    cut = [
        line for line in lines if line.startswith("fog at night on a w")
    ]  # the name is cut, not the numbers
    assert len(cut) == (3 if head else 1) and all("…  80  " in line for line in cut)
    for r in c.rows:
        # every row's line begins with its name (cut short with … when too long) and its number of images
        mine = [line for line in lines if re.match(rf"{re.escape(r.name[:12])}[^0-9]* {r.n}  ", line)]
        assert len(mine) == (3 if head else 1), (r.name, text)
        for m, d in r.metrics.items():
            cell = f"{d.champion:.3f}→{d.challenger:.3f} {d.diff:+.3f} [{d.ci_low:+.3f},{d.ci_high:+.3f}]"
            assert sum(cell in line for line in mine) == 1, (r.name, m, cell, text)
    titles = ("accuracy", "calibration error (ECE)", "trusted share (coverage)", "errors among trusted")
    for title in (*titles, "novelty AUROC", "false alarms at alpha") if head else ("novelty AUROC",):
        assert title in text
    if head:
        tw = c.trusted_wrong
        assert tw is not None
        unwrapped = text.replace("\n" + " " * 13, " ")  # the counts wrap under their side's name
        for who in ("champion", "challenger"):
            per = ", ".join(f"{cond}: {k}" for cond, k in tw[who]["by_condition"].items())
            assert f"{who + ':':<12} trusted but wrong: {tw[who]['n']} ({per})" in unwrapped.splitlines()
