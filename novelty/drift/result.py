"""What a drift test answers (:class:`DriftTestResult`) and the checks every test applies to its inputs.

Every test compares a *window* of production data with a *reference* and returns the same fields: the test's
``statistic``, its ``p_value`` (small = the window is shifted), an ``effect`` size with a confidence interval
(``ci_low``, ``ci_high``; what the effect measures is in ``effect_name``), the window and reference sizes, and
test-specific ``details``. Per-image arrays (e.g. the classifier's scores) live in ``arrays`` and are left
out of :meth:`DriftTestResult.to_json`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from novelty.drift.errors import (
    DriftDependencyError,
    EmptyWindowError,
    NonFiniteEmbeddingsError,
    WindowTooSmallError,
)
from novelty.errors import DimensionMismatchError, InvalidInputError
from novelty.params import check_int

__all__ = ["MIN_WINDOW", "DriftTestResult", "as_pvalues", "as_sample", "require_scipy", "require_sklearn"]

#: the fewest images a window (and each sample of a two-sample test) must hold
MIN_WINDOW = 2


@dataclass
class DriftTestResult:
    """One test of one window against the reference. ``p_value`` is NaN when no permutations were run
    (``n_permutations=0``: the statistic alone, as used for thresholds from the reference's own windows)."""

    test: str
    statistic: float
    p_value: float
    effect: float
    effect_name: str
    ci_low: float
    ci_high: float
    n_window: int
    n_reference: int
    details: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    confidence: float = 0.95

    def significant(self, level: float = 0.05) -> bool:
        """``p_value < level`` (never true for a NaN p-value)."""
        return bool(self.p_value < level)

    def to_json(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "statistic": _num(self.statistic),
            "p_value": _num(self.p_value),
            "effect": _num(self.effect),
            "effect_name": self.effect_name,
            "ci": [_num(self.ci_low), _num(self.ci_high)],
            "confidence": self.confidence,
            "n_window": self.n_window,
            "n_reference": self.n_reference,
            "details": _jsonable(self.details),
        }


def _num(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return _num(v)
    return v


# --- inputs --------------------------------------------------------------------------------------------
def as_sample(
    x: object, name: str = "window", *, dim: int | None = None, minimum: int = MIN_WINDOW
) -> np.ndarray:
    """``x`` as a finite float32 ``(n, d)`` array with ``n ≥ minimum``; a specific error otherwise."""
    if x is None:
        raise EmptyWindowError(f"the {name} is None: pass an (n, d) array of embeddings")
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise InvalidInputError(f"the {name} must be an (n, d) array of embeddings: {e}") from None
    if arr.size == 0:
        raise EmptyWindowError(f"the {name} is empty: it holds no embedding")
    if arr.ndim != 2:
        raise InvalidInputError(f"the {name} must be an (n, d) array of embeddings, got shape {arr.shape}")
    if arr.shape[0] < minimum:
        raise WindowTooSmallError(
            f"the {name} holds {arr.shape[0]} embedding(s); the drift tests need at least {minimum} "
            "(use longer windows, e.g. --window 7d or a count such as 100)"
        )
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(
            f"the {name} has embeddings of dimension {arr.shape[1]}, the reference {dim}: "
            "were they made by the same backbone?"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise NonFiniteEmbeddingsError(
            f"{int(bad.sum())} of the {arr.shape[0]} embeddings of the {name} contain NaN or infinity "
            f"(first at row {int(np.flatnonzero(bad)[0])}); leave out unreadable images before testing"
        )
    return np.ascontiguousarray(arr)


def as_pvalues(p: object, name: str = "window's p-values", *, minimum: int = MIN_WINDOW) -> np.ndarray:
    """``p`` as a 1-D float64 array of values in (0, 1] with at least ``minimum`` entries."""
    if p is None:
        raise EmptyWindowError(f"the {name} are None")
    try:
        arr = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise InvalidInputError(f"the {name} must be a 1-D array of numbers: {str(e)[:200]}") from None
    if arr.ndim != 1:
        raise InvalidInputError(f"the {name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise EmptyWindowError(f"the {name} are empty: the window holds no scored image")
    if arr.size < minimum:
        raise WindowTooSmallError(
            f"the window holds {arr.size} p-value(s); the tests need at least {minimum}"
        )
    if not np.isfinite(arr).all():
        raise NonFiniteEmbeddingsError(
            f"the {name} contain NaN or infinity ({int((~np.isfinite(arr)).sum())} of {arr.size}); "
            "leave out unreadable images"
        )
    if (arr <= 0).any() or (arr > 1).any():
        raise InvalidInputError(
            f"the {name} must lie in (0, 1]; got values from {arr.min():g} to {arr.max():g}"
        )
    return arr


def require_scipy() -> Any:
    try:
        import scipy.stats
    except ImportError:
        raise DriftDependencyError("the drift tests need scipy: pip install 'novelty[drift]'") from None
    return scipy.stats


def require_sklearn() -> Any:
    try:
        import sklearn
    except ImportError:
        raise DriftDependencyError(
            "this drift test needs scikit-learn: pip install 'novelty[drift]'"
        ) from None
    return sklearn


def subsample(x: np.ndarray, max_rows: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_rows`` rows of ``x`` drawn without replacement (all of them, in order, if fewer)."""
    if max_rows is None or x.shape[0] <= max_rows:
        return x
    return x[np.sort(rng.choice(x.shape[0], size=max_rows, replace=False))]


def sequential_p_value(
    observed: float,
    draw: Callable[[int], np.ndarray],
    n_max: int,
    *,
    stop_after: int | None = None,
    block: int = 128,
) -> tuple[float, np.ndarray]:
    """A permutation p-value from up to ``n_max`` statistics drawn ``block`` at a time by ``draw(b)``.

    Without ``stop_after``: ``(1 + #{null ≥ observed}) / (1 + B)`` over all ``B = n_max``. With it, Besag and
    Clifford's sequential p-value (1991): stop as soon as ``stop_after`` permutation statistics reached the
    observed one, after ``L`` draws, with ``p = stop_after / L`` — just as valid, and a window that does not
    drift costs a few dozen permutations instead of ``n_max``, so ``n_max`` can be large enough for p-values
    that survive a correction over many windows. Returns the p-value and the statistics drawn."""
    tol = 1e-12 * max(1.0, abs(observed))
    parts: list[np.ndarray] = []
    count = done = 0
    while done < n_max:
        vals = np.asarray(draw(min(block, n_max - done)), dtype=np.float64)
        hits = vals >= observed - tol
        if stop_after is not None and count + int(hits.sum()) >= stop_after:
            pos = int(np.flatnonzero(hits)[stop_after - count - 1])
            parts.append(vals[: pos + 1])
            return stop_after / (done + pos + 1), np.concatenate(parts)
        count += int(hits.sum())
        done += vals.size
        parts.append(vals)
    if not parts:
        return math.nan, np.empty(0)
    return (1 + count) / (1 + done), np.concatenate(parts)


def check_permutations(n: object, name: str = "n_permutations") -> int:
    return check_int(n, name, minimum=0)
