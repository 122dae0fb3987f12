"""Assisted labelling: accept the head's answer without a human where it is neither novel nor uncertain, and
measure how often the model's answers are right.

The rule (:func:`auto_accepted`): an image whose p-value is at least ``min_p`` (default: the selection's
``alpha``, i.e. not flagged as novel) *and* whose head probability is at least ``min_prob`` (default
:data:`AUTO_MIN_PROB` = 0.9), with a prediction that is one of the classes, gets the prediction as its label
(labeller ``"model:<model_version>"``, ``auto=True``). :func:`measure_assistance` measures, against true labels,
the share of pre-annotations that were right and the error rate of the auto-accepted labels (with a Wilson 95 %
interval): the saving is measured, never assumed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from novelty.errors import InvalidInputError
from novelty.flywheel.dataset import Entry, now_iso
from novelty.flywheel.selected import SelectedImage, read_selection

__all__ = [
    "AUTO_MIN_PROB",
    "AssistanceStats",
    "auto_accepted",
    "auto_entry",
    "check_thresholds",
    "measure_assistance",
]

#: the head's probability an answer needs to be accepted without a human (with a p-value ≥ alpha)
AUTO_MIN_PROB = 0.9


def auto_accepted(
    item: SelectedImage,
    *,
    min_p: float,
    min_prob: float = AUTO_MIN_PROB,
    classes: Sequence[str] | None = None,
) -> bool:
    """Whether the head's answer for ``item`` is accepted without a human: not novel (``p_value ≥ min_p``) and
    certain (``probability ≥ min_prob``), with a prediction that is one of ``classes`` (when given)."""
    if item.prediction is None or item.p_value is None or item.probability is None:
        return False
    if classes is not None and item.prediction not in classes:
        return False
    return item.p_value >= min_p and item.probability >= min_prob


def check_thresholds(min_p: float, min_prob: float) -> None:
    for name, v in (("auto_min_p", min_p), ("auto_min_prob", min_prob)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise InvalidInputError(f"{name} must lie in [0, 1], got {v!r}")


def auto_entry(item: SelectedImage, model_version: str) -> Entry:
    return Entry(
        id=item.id,
        sha256=item.sha256,
        path=item.path,
        label=str(item.prediction),
        source=item.source or "selection",
        labeller=f"model:{model_version or 'unknown'}",
        time=now_iso(),
        group=item.group,
        condition=item.condition,
        auto=True,
    )


@dataclass(frozen=True)
class AssistanceStats:
    """How much the model's answers would have saved on a labelled selection (see :func:`measure_assistance`).

    ``pre_right_share``: of the items with a pre-annotation, the share whose pre-annotation equals the true label
    (all items; ``pre_right_share_human``: only those left to people). ``auto_error_rate``: of the auto-accepted
    items, the share whose accepted label is wrong, with a Wilson 95 % interval (``auto_error_ci``)."""

    n: int
    n_preannotated: int
    n_pre_right: int
    pre_right_share: float
    n_human: int
    n_human_preannotated: int
    n_human_pre_right: int
    pre_right_share_human: float
    n_auto: int
    n_auto_wrong: int
    auto_error_rate: float
    auto_error_ci: tuple[float, float]
    auto_min_p: float
    auto_min_prob: float

    def to_json(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["auto_error_ci"] = list(self.auto_error_ci)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _share(k: int, n: int) -> float:
    return k / n if n else math.nan


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def measure_assistance(
    selection: Any,
    truth: Mapping[str, str],
    *,
    auto_min_p: float | None = None,
    auto_min_prob: float = AUTO_MIN_PROB,
) -> AssistanceStats:
    """Measure the pre-annotations and the auto-accept rule on the items of ``selection`` whose true label is in
    ``truth`` (``{item id: label}``; items missing from it are left out)."""
    sel = read_selection(selection)
    min_p = sel.alpha if auto_min_p is None else auto_min_p
    check_thresholds(min_p, auto_min_prob)
    items = [it for it in sel.items if it.id in truth]
    classes = sel.classes or None
    pre = [it for it in items if it.prediction is not None]
    auto = [it for it in items if auto_accepted(it, min_p=min_p, min_prob=auto_min_prob, classes=classes)]
    auto_ids = {it.id for it in auto}
    human = [it for it in items if it.id not in auto_ids]
    human_pre = [it for it in human if it.prediction is not None]
    right = sum(it.prediction == truth[it.id] for it in pre)
    human_right = sum(it.prediction == truth[it.id] for it in human_pre)
    wrong = sum(it.prediction != truth[it.id] for it in auto)
    return AssistanceStats(
        n=len(items),
        n_preannotated=len(pre),
        n_pre_right=right,
        pre_right_share=_share(right, len(pre)),
        n_human=len(human),
        n_human_preannotated=len(human_pre),
        n_human_pre_right=human_right,
        pre_right_share_human=_share(human_right, len(human_pre)),
        n_auto=len(auto),
        n_auto_wrong=wrong,
        auto_error_rate=_share(wrong, len(auto)),
        auto_error_ci=_wilson(wrong, len(auto)),
        auto_min_p=float(min_p),
        auto_min_prob=float(auto_min_prob),
    )
