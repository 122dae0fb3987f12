"""The data flywheel: select what to label, label it, retrain, compare, promote.

The loop itself sits at the top — ``pools`` and ``selection`` (what to label), ``dataset`` (the versioned
labelled data), ``record`` and ``retrain`` (the challenger), ``turn`` (one turn for cron) — beside three wings:
``labels`` (export for people, auto-accept and its audit, import), ``comparison`` (the champion and the
challenger on the same data, and the gate) and ``registry`` (versions, aliases, promotion and rollback).
Import the modules directly, e.g. ``from novelty.flywheel.dataset import Dataset`` or
``from novelty.flywheel.comparison.compare import compare``. ``import novelty`` never loads this package.
"""
