"""Did the shift also move the condition head's predictions? A test on the predicted classes.

    r = prediction_test(reference_predictions, window_predictions)

The statistic is Pearson's χ² of homogeneity of the predicted-class counts of the window and the reference
(classes seen in either), with scipy's p-value; the effect is the total variation distance between the two
predicted-class distributions (half the sum of absolute share differences), with a bootstrap interval.
Without labels this cannot say whether the head is *wrong* on the window, only whether it answers
differently: a head that is confidently wrong in a new way (the windshield head on ice) does move.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from novelty.drift.bootstrap import bootstrap_interval
from novelty.drift.errors import EmptyWindowError, WindowTooSmallError
from novelty.drift.result import MIN_WINDOW, DriftTestResult, require_scipy
from novelty.params import check_int, check_real

__all__ = ["prediction_test"]


def prediction_test(
    reference_predictions: Sequence[Any],
    window_predictions: Sequence[Any],
    *,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> DriftTestResult:
    """χ² test of the window's predicted classes against the reference's (see the module docstring)."""
    stats = require_scipy()
    ref = [str(p) for p in reference_predictions if p is not None and str(p) != ""]
    win = [str(p) for p in window_predictions if p is not None and str(p) != ""]
    for name, vals in (("reference", ref), ("window", win)):
        if not vals:
            raise EmptyWindowError(f"the {name} holds no prediction of the condition head")
        if len(vals) < MIN_WINDOW:
            raise WindowTooSmallError(
                f"the {name} holds {len(vals)} prediction(s); need at least {MIN_WINDOW}"
            )
    n_boot = check_int(n_bootstrap, "n_bootstrap", minimum=0)
    confidence = check_real(confidence, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
    classes = sorted(set(ref) | set(win))
    pos = {c: i for i, c in enumerate(classes)}
    rc = np.bincount([pos[c] for c in ref], minlength=len(classes))
    wc = np.bincount([pos[c] for c in win], minlength=len(classes))
    n, m = int(rc.sum()), int(wc.sum())
    if len(classes) < 2:
        chi2, p_value = 0.0, 1.0
    else:
        res = stats.chi2_contingency(np.stack([rc, wc]), correction=False)
        chi2, p_value = float(res.statistic), float(res.pvalue)
    pr, pw = rc / n, wc / m
    tv = 0.5 * float(np.abs(pr - pw).sum())
    lo, hi = bootstrap_interval(
        lambda br, bw: 0.5 * np.abs(br / n - bw / m).sum(axis=1),
        class_counts=(rc, wc),
        n_boot=n_boot,
        confidence=confidence,
        rng=np.random.default_rng(seed),
    )
    return DriftTestResult(
        test="predictions",
        statistic=chi2,
        p_value=p_value,
        effect=tv,
        effect_name="total variation distance between predicted-class distributions",
        ci_low=lo,
        ci_high=hi,
        n_window=m,
        n_reference=n,
        details={
            "classes": classes,
            "reference_shares": pr.tolist(),
            "window_shares": pw.tolist(),
        },
        confidence=confidence,
    )
