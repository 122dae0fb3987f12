"""Where a turn's new labels go (:func:`_route`): by group, to the training set or to the new slice that the
comparison evaluates on, so that no image of a group in the slice (nor of the test set) is trained on."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any


def _group(e: Any) -> str:
    return str(e.group or f"id:{e.id}")


def _split_holdout(entries: Sequence[Any], share: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Split entries by group (an entry without a group is its own): ``share`` of the groups, chosen by a hash
    of the group name and the seed (stable whatever the order), are held out."""
    if share <= 0 or len(entries) < 2:
        return list(entries), []
    groups = sorted({_group(e) for e in entries})

    def key(g: str) -> str:
        return hashlib.sha256(f"{seed}:{g}".encode()).hexdigest()

    n_out = min(len(groups) - 1, max(1, round(share * len(groups))))
    out = set(sorted(groups, key=key)[:n_out])
    train = [e for e in entries if _group(e) not in out]
    held = [e for e in entries if _group(e) in out]
    return train, held


def _route(
    entries: Sequence[Any],
    share: float,
    seed: int,
    *,
    trained: Iterable[str] = (),
    evaluated: Iterable[str] = (),
) -> tuple[list[Any], list[Any], list[Any]]:
    """``(train, held, withheld)``: the new slice is drawn by group from the people's labels only
    (:func:`_split_holdout`), so an automatic label never enters it; automatic labels go to training, except
    those of a held-out group (``withheld``: kept out of both, so that no near-duplicate of a slice image is
    trained on).

    A group placed by an earlier turn stays where it is: ``trained`` names the groups of the training set,
    ``evaluated`` those of the new slice and the test set. People's labels of an evaluated group join the slice,
    of a trained group the training set; only groups new to both are split. (A group in both, placed by hand,
    counts as evaluated: its images are kept out of training.)"""
    ev = set(evaluated)
    tr = set(trained) - ev
    people = [e for e in entries if not e.auto]
    placed_train = [e for e in people if e.group and e.group in tr]
    placed_held = [e for e in people if e.group and e.group in ev]
    fresh = [e for e in people if not (e.group and (e.group in tr or e.group in ev))]
    train, held = _split_holdout(fresh, share, seed)
    train, held = placed_train + train, placed_held + held
    out = {_group(e) for e in held} | ev
    auto = [e for e in entries if e.auto]
    return train + [e for e in auto if _group(e) not in out], held, [e for e in auto if _group(e) in out]
