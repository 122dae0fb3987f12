"""How numbers read in reports, tables and messages: one rule per kind of number, used everywhere.

format_p_value(0.0462)     # '0.046'
"""

from __future__ import annotations

import math

__all__ = ["format_p_value"]


def format_p_value(p: object) -> str:
    """A p-value with two significant digits: ``0.046``, ``0.5``, ``1``, ``0.0031``, ``2.4e-07``; ``—`` for
    none (``None``, NaN, infinity, or anything that is not a number).

    Two significant digits at every size, not a fixed number of decimals: a p-value of 0.046 never reads
    as 0.05 beside a level of 0.05, and a small one keeps its order of magnitude instead of reading 0.000."""
    try:
        v = float(p)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return "—"
    return f"{v:.2g}" if math.isfinite(v) else "—"
