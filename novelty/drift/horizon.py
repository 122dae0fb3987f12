"""Data horizon and cadence: how fast the data moves away, and what to do about it.

    curve = drift_by_lag(embeddings, run_windows)        # MMD between windows, by how far apart they are
    curve.horizon                                         # the smallest lag at which windows usually differ
    rec = recommend(run, curve)                           # retrain now / keep watching / fine, with reasons

**Drift by lag** (:func:`drift_by_lag`): every pair of windows ``(i, j)`` of a stream (up to
``max_pairs_per_lag`` pairs per lag, spread over the stream) is compared with the MMD test on at most
``max_per_window`` images of each; for each lag (the time between the windows' starts, or the number of
windows between them for count windows) the curve holds the mean MMD² and the share of pairs that differ at
``level``. The **data horizon** is the smallest lag from which on at least half of the pairs differ at every
longer lag too: the age at which a reference goes stale. A stream that never gets there has no horizon within
the lags it spans.

**The recommendation** (:func:`recommend`) reads the latest windows of a monitoring run:

- **retrain now**: the latest window drifts (an adjusted p-value below the level, or a statistic beyond the
  reference's own windows) *and* the head's predictions moved with it (χ² p-value below the level and a total
  variation distance of at least ``min_prediction_shift``) — the shift reaches the answers the model gives.
  Without a head: the latest window and at least one of the two before it drift.
- **keep watching**: drift in the latest window that has not moved the predictions (the head still answers as
  before; label a sample of the flagged images to check it is still right), drift in only one recent window
  without a head, or drift earlier that has since stopped.
- **fine**: none of the last three windows drifts.

With a horizon, the advice adds a cadence: retrain at least once per horizon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from novelty.drift.mmd import mmd_test
from novelty.drift.monitor import DriftRun, Window, WindowResult
from novelty.drift.result import MIN_WINDOW, as_sample
from novelty.formatting import format_p_value
from novelty.params import check_int, check_real

__all__ = ["HorizonCurve", "Recommendation", "drift_by_lag", "recommend"]


@dataclass
class HorizonCurve:
    unit: str  # "days" or "windows"
    lags: list[float]
    mean_mmd2: list[float]
    share_different: list[float]
    pairs: list[int]
    horizon: float | None
    level: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "lags": self.lags,
            "mean_mmd2": self.mean_mmd2,
            "share_different": self.share_different,
            "pairs": self.pairs,
            "horizon": self.horizon,
            "level": self.level,
            "settings": self.settings,
        }


def drift_by_lag(
    embeddings: object,
    windows: list[Window],
    *,
    max_per_window: int = 200,
    max_pairs_per_lag: int = 8,
    n_permutations: int = 100,
    level: float = 0.05,
    seed: int = 0,
) -> HorizonCurve:
    """How much windows differ as a function of the lag between them (see the module docstring)."""
    x = np.asarray(embeddings)  # float16 stays float16: only the sampled rows are converted
    if x.ndim != 2 or x.shape[0] == 0:
        as_sample(x, "stream", minimum=1)  # the specific error
    max_per_window = check_int(max_per_window, "max_per_window", minimum=MIN_WINDOW)
    max_pairs_per_lag = check_int(max_pairs_per_lag, "max_pairs_per_lag", minimum=1)
    level = check_real(level, "level", low=0.0, high=1.0, low_open=True, high_open=True)
    rng = np.random.default_rng(seed)
    wins = [w for w in windows if w.index.size >= MIN_WINDOW]
    timed = all(w.start is not None for w in wins)
    unit = "days" if timed else "windows"
    samples = [
        w.index
        if w.index.size <= max_per_window
        else np.sort(rng.choice(w.index, max_per_window, replace=False))
        for w in wins
    ]
    by_lag: dict[float, list[tuple[int, int]]] = {}
    for i in range(len(wins)):
        for j in range(i + 1, len(wins)):
            lag = (wins[j].start - wins[i].start) / 86400.0 if timed else float(j - i)  # type: ignore[operator]
            by_lag.setdefault(round(lag, 6), []).append((i, j))
    lags, means, shares, counts = [], [], [], []
    for lag in sorted(by_lag):
        pairs = by_lag[lag]
        if len(pairs) > max_pairs_per_lag:
            pairs = [pairs[k] for k in np.linspace(0, len(pairs) - 1, max_pairs_per_lag).astype(int)]
        stats, sig = [], []
        for a, b in pairs:
            r = mmd_test(
                x[samples[a]].astype(np.float32),
                x[samples[b]].astype(np.float32),
                n_permutations=n_permutations,
                n_bootstrap=0,
                max_reference=None,
                seed=int(rng.integers(1 << 31)),
            )
            stats.append(r.statistic)
            sig.append(r.p_value < level)
        lags.append(float(lag))
        means.append(float(np.mean(stats)))
        shares.append(float(np.mean(sig)))
        counts.append(len(pairs))
    horizon = None
    for k in range(len(lags)):
        if all(s >= 0.5 for s in shares[k:]):
            horizon = lags[k]
            break
    return HorizonCurve(
        unit=unit,
        lags=lags,
        mean_mmd2=means,
        share_different=shares,
        pairs=counts,
        horizon=horizon,
        level=level,
        settings={
            "max_per_window": max_per_window,
            "n_permutations": n_permutations,
            "max_pairs_per_lag": max_pairs_per_lag,
        },
    )


@dataclass
class Recommendation:
    action: str  # "retrain now" | "keep watching" | "fine"
    reasons: list[str]
    cadence: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": self.reasons, "cadence": self.cadence}


def _drifts(w: WindowResult, level: float) -> bool:
    return w.drift(level) or any(w.beyond_threshold.values())


def recommend(
    run: DriftRun,
    curve: HorizonCurve | None = None,
    *,
    min_prediction_shift: float = 0.05,
) -> Recommendation:
    """Turn a monitoring run (and a data horizon) into retrain now / keep watching / fine (module docstring)."""
    min_prediction_shift = check_real(min_prediction_shift, "min_prediction_shift", low=0.0, high=1.0)
    tested = [w for w in run.windows if w.tests]
    cadence = None
    if curve is not None and curve.horizon is not None:
        cadence = (
            f"retrain at least every {curve.horizon:g} {curve.unit}: windows that far apart usually differ"
        )
    if not tested:
        return Recommendation("fine", ["no window was large enough to test"], cadence)
    last, recent = tested[-1], tested[-3:]
    drift_last = _drifts(last, run.level)
    n_recent = sum(_drifts(w, run.level) for w in recent)
    reasons = []
    if drift_last:
        which = [t for t, p in last.adjusted.items() if p < run.level] + [
            f"{t} beyond the reference's range" for t, b in last.beyond_threshold.items() if b
        ]
        reasons.append(f"the latest window ({last.label}) drifts: {', '.join(which)}")
    pred = last.predictions
    if drift_last and pred is not None:
        moved = pred.p_value < run.level and pred.effect >= min_prediction_shift
        shares = ", ".join(
            f"{c} {a:.0%}→{b:.0%}"
            for c, a, b in zip(
                pred.details.get("classes", []),
                pred.details.get("reference_shares", []),
                pred.details.get("window_shares", []),
                strict=False,
            )
        )
        if moved:
            reasons.append(
                f"the head's predictions moved too ({shares}; distance {pred.effect:.2f}, p={format_p_value(pred.p_value)})"
            )
            return Recommendation("retrain now", reasons, cadence)
        reasons.append(
            f"the head's predictions did not move ({shares}): label a sample of the flagged images to check the "
            "head is still right on them"
        )
        return Recommendation("keep watching", reasons, cadence)
    if drift_last:
        if n_recent >= 2:
            reasons.append(f"{n_recent} of the last {len(recent)} windows drift (no head to ask)")
            return Recommendation("retrain now", reasons, cadence)
        reasons.append("a single drifting window so far (no head to ask whether its answers moved)")
        return Recommendation("keep watching", reasons, cadence)
    if n_recent:
        reasons.append(f"{n_recent} of the last {len(recent)} windows drifted, the latest does not")
        return Recommendation("keep watching", reasons, cadence)
    earlier = [w.label for w in tested[:-3] if _drifts(w, run.level)]
    reasons.append(
        "none of the last windows drifts" + (f" (earlier drift: {', '.join(earlier[:3])})" if earlier else "")
    )
    return Recommendation("fine", reasons, cadence)
