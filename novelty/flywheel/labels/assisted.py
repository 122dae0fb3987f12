"""Assisted labelling: accept the head's answer without a human only where the detector *trusts* it, and
measure how often the model's answers are right.

The rule (:func:`auto_accepted`): an image whose p-value is at least ``min_p`` (default: the selection's
``alpha``, i.e. not flagged as novel) *and* whose head probability is at least ``min_prob`` (default
:data:`AUTO_MIN_PROB` = 0.9), with a prediction that is one of the classes, *and* whose answer is trusted
(:mod:`novelty.trust`: not novel and the head competent there) gets the prediction as its label (labeller
``"model:<model_version>"``, ``auto=True``). Trusted at which error rate ε: by default the detector's own (the
selection's per-image ``trusted``); with ``auto_risk`` (:func:`auto_threshold`) another ε whose competence
threshold the selection's trust header records, from the same calibration split — auto-accept may hold itself to
another ε than the detector's answers in production. ``min_p`` and ``min_prob`` can only narrow what is
trusted, never widen it. Selections made before the trust decision (no ``trusted`` per item, no ``trust``
header) keep the old rule, p-value and probability alone.

:func:`measure_assistance` measures, against true labels, the share of pre-annotations that were right and the
error rate of the auto-accepted labels (with a Wilson 95 % interval): the saving is measured, never assumed.

**A condition labelled for the first time is audited in full** (:func:`newly_labelled`): the trust decision of a
detector retrained with a handful of labels of a new condition rests on those few labels. An image whose condition
— its own, when the selection gives one, else the condition of its nearest training image (``nearest``) — got its
first human label in the latest version of the training dataset that added human labels is never accepted
automatically: it goes to people with the head's answer listed in the audit, so the next turn measures the
auto-label error rate there before it relies on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from novelty.errors import InvalidInputError
from novelty.flywheel.dataset import Entry, now_iso
from novelty.flywheel.selection import SelectedItem, read_selection
from novelty.params import check_real

__all__ = [
    "AUTO_MIN_PROB",
    "AssistanceStats",
    "auto_accepted",
    "auto_entry",
    "auto_threshold",
    "check_thresholds",
    "measure_assistance",
    "newly_labelled",
    "recorded_threshold",
]

#: the head's probability an answer needs to be accepted without a human (with a p-value ≥ alpha)
AUTO_MIN_PROB = 0.9


def first_labelled_conditions(entries: Iterable[Entry]) -> set[str]:
    """The conditions whose first human label came in the latest dataset version that added human labels — a
    turn's labels, not the dataset's first version (the initial training data is no turn)."""
    first: dict[str, int] = {}
    versions: set[int] = set()
    for e in entries:
        if e.auto:
            continue
        versions.add(e.version)
        if e.condition is not None:
            first[e.condition] = min(first.get(e.condition, e.version), e.version)
    if len(versions) < 2:
        return set()
    latest = max(versions)
    return {c for c, v in first.items() if v == latest}


def newly_labelled(items: Sequence[SelectedItem], entries: Iterable[Entry]) -> dict[str, str]:
    """``{item id: condition}`` of the items that must be audited in full (see the module docstring): their own
    condition, else that of their nearest training image (``nearest``, a training id: the entry's path or id),
    got its first human label in the latest version of the training dataset that added human labels."""
    entries = list(entries)
    new = first_labelled_conditions(entries)
    if not new:
        return {}
    by_key: dict[str, str] = {}
    for e in entries:
        if e.condition is not None:
            by_key[e.path] = e.condition
            by_key[e.id] = e.condition
    out = {}
    for it in items:
        cond = it.condition or (by_key.get(it.nearest) if it.nearest else None)
        if cond in new:
            out[it.id] = cond
    return out


def auto_accepted(
    item: SelectedItem,
    *,
    min_p: float,
    min_prob: float = AUTO_MIN_PROB,
    classes: Sequence[str] | None = None,
    threshold: float | None = None,
) -> bool:
    """Whether the head's answer for ``item`` is accepted without a human: not novel (``p_value ≥ min_p``),
    certain (``probability ≥ min_prob``), with a prediction that is one of ``classes`` (when given), and trusted:

    - with ``threshold`` (the competence threshold at the ε asked, :func:`auto_threshold`): the item is not
      novel and its ``competence`` is at least ``threshold`` (an item without a competence is never accepted);
    - without one, for an item that carries ``trusted`` (the detector's verdict at its own ε): ``trusted``;
    - an item of a selection made before the trust decision (``trusted`` and ``competence`` ``None``, no trust
      header) keeps the old rule: p-value and probability alone decide.
    """
    if item.prediction is None or item.p_value is None or item.probability is None:
        return False
    if classes is not None and item.prediction not in classes:
        return False
    if not (item.p_value >= min_p and item.probability >= min_prob):
        return False
    if threshold is not None:
        return item.is_novel is False and item.competence is not None and item.competence >= threshold
    return item.trusted is None or item.trusted


def auto_threshold(trust: Mapping[str, Any] | None, auto_risk: float | None) -> float | None:
    """The competence threshold auto-accept holds at ε = ``auto_risk``, as the selection's trust header records
    it (``math.inf`` when its calibration split cannot certify ε: nothing is accepted); ``None`` for
    ``auto_risk=None`` (the detector's own ε: each item's ``trusted``). :class:`InvalidInputError` when the
    selection has no trust decision, or does not record ε (the message lists the ε it does)."""
    if auto_risk is None:
        return None
    eps = check_real(auto_risk, "auto_risk", low=0.0, high=1.0, low_open=True, high_open=True)
    if trust is None:
        raise InvalidInputError(
            f"auto_risk={eps:g} needs the selection's trust decision, and this selection has none (its detector "
            "has no head or keeps the legacy rule 'not-novel', or the selection was made before the trust "
            "decision existed): leave auto_risk out, or select again with a detector fitted with labels"
        )
    lam = recorded_threshold(trust, eps)
    if lam is None:
        held = ", ".join(sorted(trust.get("thresholds") or {}, key=float)) or "none"
        raise InvalidInputError(
            f"auto_risk={eps:g} is not an error rate the selection's trust decision records; it records {held}"
        )
    return lam


def recorded_threshold(trust: Mapping[str, Any], risk: float) -> float | None:
    """The competence threshold a trust header records at ε = ``risk`` (``math.inf``: recorded as not
    certifiable), or ``None`` when it records none at that ε."""
    for key, lam in (trust.get("thresholds") or {}).items():
        if float(key) == float(risk):
            return math.inf if lam is None else float(lam)
    return None


def check_thresholds(min_p: float, min_prob: float) -> None:
    for name, v in (("auto_min_p", min_p), ("auto_min_prob", min_prob)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise InvalidInputError(f"{name} must lie in [0, 1], got {v!r}")


def auto_entry(item: SelectedItem, model_version: str) -> Entry:
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
    auto_risk: float | None = None  # the ε auto-accept held (None: the detector's own)
    auto_threshold: float | None = None  # the competence threshold at ``auto_risk`` (inf: none certified)

    def to_json(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["auto_error_ci"] = list(self.auto_error_ci)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


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
    auto_risk: float | None = None,
) -> AssistanceStats:
    """Measure the pre-annotations and the auto-accept rule (at ε = ``auto_risk``, default the detector's own) on
    the items of ``selection`` whose true label is in ``truth`` (``{item id: label}``; items missing from it are
    left out)."""
    sel = read_selection(selection)
    min_p = sel.alpha if auto_min_p is None else auto_min_p
    check_thresholds(min_p, auto_min_prob)
    threshold = auto_threshold(sel.trust, auto_risk)
    items = [it for it in sel.items if it.id in truth]
    classes = sel.classes or None
    pre = [it for it in items if it.prediction is not None]
    auto = [
        it
        for it in items
        if auto_accepted(it, min_p=min_p, min_prob=auto_min_prob, classes=classes, threshold=threshold)
    ]
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
        auto_risk=None if auto_risk is None else float(auto_risk),
        auto_threshold=threshold,
    )
