"""Select what to label under a budget: the images of a :class:`~novelty.flywheel.pools.Pool` that teach the
model most, each with the reason it was chosen.

    pool = build_pool(det, ["results.parquet", "inbox/"], flags="novelty-flags", images_dir="sel/images")
    sel = select(pool, 50, "hybrid", seed=0)
    sel.save("sel/selection.json"); sel = Selection.load("sel/selection.json")
    sel.items[0].reason    # 'p=0.0075, novel; head sure (p(dry)=0.97); hybrid score 0.98 …; farthest … (d=0.31)'

The strategies (``random``, ``novelty``, ``uncertainty``, ``diversity``, ``hybrid``) and how each chooses are
:mod:`novelty.flywheel.strategies`'s; ``selection.json``, the record of a selection, and its reader
(:meth:`Selection.load`, strict; :func:`read_selection`, lenient) are :mod:`novelty.flywheel.selectionfile`'s.
This module gathers both, with the pool they choose from (:mod:`novelty.flywheel.pools`).
"""

from __future__ import annotations

from novelty.flywheel.pools import Pool, PoolError, build_pool
from novelty.flywheel.selectionfile import (
    FORMAT,
    FORMAT_VERSION,
    STRATEGIES,
    UNCERTAINTY_MEASURES,
    SelectedItem,
    Selection,
    SelectionError,
    read_selection,
)
from novelty.flywheel.selectionfile import describe as describe
from novelty.flywheel.strategies import (
    DEFAULT_OVERSAMPLE,
    DEFAULT_RADIUS,
    DEFAULT_WEIGHTS,
    default_measure,
    k_center,
    select,
    uncertainty_scores,
)

__all__ = [
    "DEFAULT_OVERSAMPLE",
    "DEFAULT_RADIUS",
    "DEFAULT_WEIGHTS",
    "FORMAT",
    "FORMAT_VERSION",
    "STRATEGIES",
    "UNCERTAINTY_MEASURES",
    "Pool",
    "PoolError",
    "SelectedItem",
    "Selection",
    "SelectionError",
    "build_pool",
    "default_measure",
    "k_center",
    "read_selection",
    "select",
    "uncertainty_scores",
]
