"""Split-conformal calibration: raw novelty scores → p-values with a false-alarm guarantee.

For a raw score ``s`` and held-out in-distribution calibration scores ``cal`` (never the data the scorer
was fitted on), the conformal p-value is

    p = (1 + #{cal ≥ s}) / (n_cal + 1),       novelty = 1 − p.

If a new in-distribution image is exchangeable with the calibration images, ``P(p ≤ alpha) ≤ alpha``, so
flagging ``p < alpha`` raises at most an ``alpha`` share of false alarms on in-distribution data.

Several scorers are combined into one score, then calibrated like a single scorer: each scorer's raw
score is put on a common scale with the median and interquartile range of its calibration scores (a robust
z-score, continuous beyond the calibration range), the combined score is the **mean of those z-scores**,
and its conformal p-value is taken against the combined scores of the calibration images. The combination
is a fixed function of the calibration set, so the guarantee holds up to O(1/n_cal). Measured on textile
defects, the mean of robust z-scores ranks at least as well as the better of kNN and autoencoder
(benchmarks/RESULTS.md); the minimum of per-scorer p-values saturates at 1/(n_cal+1) and ranks worse.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from novelty.errors import CalibrationError, InvalidInputError, NotFittedError
from novelty.params import check_real

__all__ = [
    "MIN_CALIBRATION",
    "ConformalCalibrator",
    "MultiScorerCalibrator",
    "calibration_split",
    "conformal_p_values",
    "min_training_images",
]

MIN_CALIBRATION = 2  # MultiScorerCalibrator needs two scores to put scorers on a common scale


def _as_scores(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{name} contain NaN or infinity")
    return arr


def conformal_p_values(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``(1 + #{cal ≥ s}) / (n + 1)`` for every ``s`` in ``scores`` (higher score = more novel)."""
    cal = np.sort(_as_scores(calibration_scores, "calibration scores"))
    s = _as_scores(scores, "scores")
    n = cal.shape[0]
    at_least = n - np.searchsorted(cal, s, side="left")
    return (1.0 + at_least) / (n + 1.0)


class ConformalCalibrator:
    """Turns one scorer's raw scores into conformal p-values."""

    def fit(self, calibration_scores: np.ndarray) -> ConformalCalibrator:
        cal = _as_scores(calibration_scores, "calibration scores")
        if cal.shape[0] < 1:
            raise CalibrationError("no calibration scores: hold out in-distribution images for calibration")
        self.scores_ = np.sort(cal)
        return self

    @property
    def n(self) -> int:
        return int(self._cal().shape[0])

    def _cal(self) -> np.ndarray:
        if not hasattr(self, "scores_"):
            raise NotFittedError("calibrator is not fitted")
        return self.scores_

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        return conformal_p_values(self._cal(), scores)

    def threshold(self, alpha: float) -> float:
        """The smallest raw score flagged at ``alpha`` (``p < alpha``); ``inf`` when none can be."""
        cal = self._cal()
        n = cal.shape[0]
        # p(s) < alpha  ⇔  1 + #{cal ≥ s} < alpha (n+1)  ⇔  #{cal ≥ s} ≤ m  with m = ceil(alpha (n+1)) − 2
        m = int(np.ceil(alpha * (n + 1))) - 2
        if m < 0:
            return float("inf")
        return float(np.nextafter(cal[n - 1 - m], np.inf)) if m < n else float(-np.inf)


def check_alpha(alpha: float, n_cal: int) -> None:
    if not 0.0 < alpha < 1.0:
        raise InvalidInputError(f"alpha must lie in (0, 1), got {alpha}")
    if 1.0 / (n_cal + 1) >= alpha:
        warnings.warn(
            f"with {n_cal} calibration scores the smallest possible p-value is {1 / (n_cal + 1):.3g} ≥ "
            f"alpha={alpha}: nothing can ever be flagged. Use at least {int(np.ceil(1 / alpha))} calibration images.",
            stacklevel=3,
        )


def check_groups(alpha: float, n_cal_groups: int) -> None:
    """Warn when grouped calibration (video blocks) rests on too few independent groups for ``alpha``.

    Frames of one block are near-duplicates, so a calibration set of many frames but few blocks behaves like
    a set of about ``n_cal_groups`` scores: the conformal guarantee needs ``n_cal_groups + 1 ≥ 1 / alpha``.
    How far the false-alarm rate strays with too few groups is measured in benchmarks/RESULTS.md
    ("False alarms at alpha = 0.05", the street scenario's re-split column).
    """
    if n_cal_groups + 1 < 1.0 / alpha:
        warnings.warn(
            f"calibration holds only {n_cal_groups} groups (blocks): at alpha={alpha} the false-alarm rate on new "
            f"groups can be far from alpha. Use at least {int(np.ceil(1 / alpha)) - 1} calibration groups "
            "(more footage, or shorter blocks if neighbouring frames differ enough).",
            stacklevel=3,
        )


def robust_scale(calibration_scores: np.ndarray) -> tuple[float, float]:
    """Median and interquartile range (falling back to the standard deviation, then 1)."""
    cal = np.asarray(calibration_scores, dtype=np.float64)
    q25, med, q75 = np.percentile(cal, [25, 50, 75])
    scale = float(q75 - q25) or float(cal.std()) or 1.0
    return float(med), scale


class MultiScorerCalibrator:
    """Per-scorer conformal p-values plus one combined score and p-value (see the module docstring)."""

    def fit(self, calibration_scores: Mapping[str, np.ndarray]) -> MultiScorerCalibrator:
        if not calibration_scores:
            raise CalibrationError("no scorers to calibrate")
        cals = {k: _as_scores(v, f"calibration scores of {k!r}") for k, v in calibration_scores.items()}
        sizes = {v.shape[0] for v in cals.values()}
        if len(sizes) != 1:
            raise CalibrationError(f"scorers have different numbers of calibration scores: {sizes}")
        n = sizes.pop()
        if n < 2:
            raise CalibrationError(f"need at least 2 calibration images, got {n}")
        self.names_ = list(cals)
        self.raw_ = cals  # paired: row i of every scorer is the same calibration image
        self.calibrators_ = {k: ConformalCalibrator().fit(v) for k, v in cals.items()}
        self.scales_ = {k: robust_scale(v) for k, v in cals.items()}
        self.combined_ = ConformalCalibrator().fit(self.combined_scores(cals))
        return self

    @property
    def n(self) -> int:
        return self.calibrators_[self.names_[0]].n

    def _check(self, scores: Mapping[str, np.ndarray]) -> None:
        if not hasattr(self, "calibrators_"):
            raise NotFittedError("calibrator is not fitted")
        missing = set(self.names_) - set(scores)
        if missing:
            raise InvalidInputError(f"scores missing for scorer(s): {sorted(missing)}")

    def combined_scores(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """One raw score per image (higher = more novel): a single scorer's own score, or the mean of the
        scorers' robust z-scores."""
        self._check(scores)
        if len(self.names_) == 1:
            return _as_scores(scores[self.names_[0]], "scores")
        z = [(_as_scores(scores[k], f"scores of {k!r}") - c) / s for k, (c, s) in self.scales_.items()]
        return np.mean(np.stack(z), axis=0)

    def p_values(self, scores: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(combined p-values, {scorer: p-values})`` for raw scores of each scorer."""
        self._check(scores)
        per = {k: self.calibrators_[k].p_values(scores[k]) for k in self.names_}
        return self.combined_.p_values(self.combined_scores(scores)), per

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"calibration.{k}": self.raw_[k] for k in self.names_}

    @classmethod
    def from_state(cls, names: list[str], arrays: Mapping[str, np.ndarray]) -> MultiScorerCalibrator:
        try:
            return cls().fit({k: arrays[f"calibration.{k}"] for k in names})
        except KeyError as e:
            raise CalibrationError(f"calibration scores for {e} are missing from the artifact") from None


# --- dividing the training images -------------------------------------------------------------------
def n_calibration(n: int, fraction: float) -> int:
    """How many of ``n`` images a random split holds out to calibrate."""
    return max(1, int(round(fraction * n)))


def min_training_images(need_fit: int, fraction: float) -> int:
    """The smallest n whose random split leaves ≥ ``MIN_CALIBRATION`` images to calibrate and ≥ ``need_fit``
    to fit (both parts grow monotonically with n)."""
    fraction = check_real(fraction, "calibration_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    # start just below the bounds f·n ≥ 1.5 and (1 − f)·n ≥ need_fit − 0.5
    n = max(3, math.floor(min(1.5 / fraction, 1e9)) - 1, math.floor((need_fit - 0.5) / (1.0 - fraction)) - 1)
    while not (n_calibration(n, fraction) >= MIN_CALIBRATION and n - n_calibration(n, fraction) >= need_fit):
        n += 1
    return n


def calibration_split(
    n: int, fraction: float, *, groups: Sequence[Any] | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(fit, calibration)``. With ``groups``, all items of a group land in the same part
    (use it for near-duplicates: video frames in blocks, several photos of one object)."""
    fraction = check_real(fraction, "calibration_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        n_cal = n_calibration(n, fraction)
        return np.sort(perm[n_cal:]), np.sort(perm[:n_cal])
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise InvalidInputError(
            f"groups must hold one entry per image: {g.shape[0] if g.ndim else 0} for {n}"
        )
    uniq = np.unique(g)
    if uniq.shape[0] < 2:
        raise InvalidInputError("groups must contain at least two distinct groups")
    order = rng.permutation(uniq.shape[0])
    cal_groups: list[Any] = []
    count = 0
    for j in order:
        if count >= fraction * n:
            break
        cal_groups.append(uniq[j])
        count += int((g == uniq[j]).sum())
    is_cal = np.isin(g, np.array(cal_groups))
    return np.flatnonzero(~is_cal), np.flatnonzero(is_cal)
