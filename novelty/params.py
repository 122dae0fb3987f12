"""Constructor arguments: checks that raise :class:`~novelty.errors.InvalidInputError`, and ``clone``.

Estimators here follow scikit-learn: ``__init__`` stores its arguments (after checking them, so a bad value
fails where it was written, not at the end of a long fit), ``get_params()`` returns them, and
:func:`clone` makes an unfitted copy from them. A detector clones the scorers and the head it is given, so
the caller's instances never receive fitted state.
"""

from __future__ import annotations

import inspect
import math
import numbers
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar

from novelty.errors import InvalidInputError

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_known_params",
    "check_real",
    "clone",
]


class _HasParams(Protocol):
    def get_params(self) -> dict[str, Any]: ...


T = TypeVar("T", bound=_HasParams)


def _kind(value: object) -> str:
    if isinstance(value, str):
        return f"the string {reprlib.repr(value)}"
    try:
        return f"{type(value).__name__} {reprlib.repr(value)}"  # bounded: a value nested 10⁵ deep has no repr
    except ValueError:  # an int past 4300 digits
        return type(value).__name__


def check_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """``value`` as a Python ``int`` (numpy integers accepted; ``bool`` and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{name} must be an integer, got {_kind(value)}")
    out = int(value)
    if minimum is not None and out < minimum:
        raise InvalidInputError(f"{name} must be an integer ≥ {minimum}, got {out}")
    return out


def check_real(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite Python ``float`` within the given bounds (strings and ``bool`` refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a number, got {_kind(value)}")
    try:
        out = float(value)
    except OverflowError:  # an int past float's range
        out = -math.inf if value < 0 else math.inf
    bad = (
        not math.isfinite(out)
        or (low is not None and (out < low or (low_open and out == low)))
        or (high is not None and (out > high or (high_open and out == high)))
    )
    if bad:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise InvalidInputError(f"{name} must lie in {lo}, {hi}, got {out!r}")
    return out


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, got {_kind(value)}")
    return value


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise InvalidInputError(f"{name} must be one of {', '.join(map(repr, options))}; got {_kind(value)}")
    return value


def check_known_params(cls: type, params: Mapping[str, Any], what: str) -> None:
    """Refuse keyword arguments ``cls.__init__`` does not take, listing the ones it does."""
    sig = inspect.signature(cls)  # the constructor's parameters, without self
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    valid = [n for n, p in sig.parameters.items() if p.kind is not p.VAR_POSITIONAL]
    unknown = sorted(str(k) for k in params if k not in valid)
    if unknown:
        raise InvalidInputError(
            f"unknown parameter(s) {', '.join(unknown)} for {what}; valid parameters: {', '.join(valid)}"
        )


def clone(estimator: T) -> T:
    """A new, unfitted instance with the same parameters (``type(e)(**e.get_params())``)."""
    params = estimator.get_params()
    check_known_params(type(estimator), params, type(estimator).__name__)
    return type(estimator)(**params)
