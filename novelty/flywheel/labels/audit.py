"""The audit of assisted labelling: how many auto-accepted answers go to people instead (:func:`audit_size`), and
what their labels say about the rule's error rate (:func:`audit_result`, :func:`audit_upper_bound`).

:func:`~novelty.flywheel.labels.labelling.export_selection` sizes the audit and lists the audited answers in
``export.json`` (``auto_accept.audit``, with the ε and δ the audit was sized for); :func:`audit_result` reads them
back and compares them with the labels people gave. See :mod:`novelty.flywheel.labels.labelling` for the rule.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novelty.errors import InvalidInputError
from novelty.flywheel.labels.assisted import _wilson
from novelty.params import check_int, check_real
from novelty.trust import DEFAULT_DELTA, DEFAULT_RISK, binomial_cdf

__all__ = [
    "AUDIT_AUTO",
    "AUDIT_AUTO_RULE",
    "EXPORT_MANIFEST",
    "AuditResult",
    "audit_result",
    "audit_size",
    "audit_upper_bound",
]

log = logging.getLogger("novelty.flywheel.labels.labelling")  # one logger for the export and its audit

#: the export's manifest, written by ``export_selection`` and read by :func:`audit_result`
EXPORT_MANIFEST = "export.json"
#: ``audit=AUDIT_AUTO`` sizes the audit by :func:`audit_size`; ``export.json`` names that rule ``AUDIT_AUTO_RULE``
AUDIT_AUTO = "auto"
AUDIT_AUTO_RULE = "auto: ln δ / ln(1−ε)"


def audit_size(n_accepted: int, risk: float, delta: float) -> int:
    """How many of ``n_accepted`` auto-accepted answers to audit so that a clean audit vouches for ε = ``risk``.

    The smallest ``n`` such that, when none of ``n`` audited answers is wrong, the one-sided exact
    (Clopper–Pearson) upper bound on the error rate at confidence 1 − δ (``delta``) is at most ε: that bound for
    0 errors of ``n`` is the ``p`` with ``P(Binomial(n, p) ≤ 0) = (1 − p)ⁿ = δ``, so ``n`` is the smallest with
    ``(1 − ε)ⁿ ≤ δ``, i.e. ``n = ⌈ln δ / ln(1 − ε)⌉`` (settled with :func:`novelty.trust.binomial_cdf`, the exact
    test the trust decision uses, where rounding could miss by one). ε = 0.05, δ = 0.1 gives 45; ε = 0.01, 230.
    It certifies nothing when an audited answer is wrong: 1 wrong of 45 bounds the error rate by 8.4 % only,
    and 77 audited answers are needed to bound it by 5 % with one error. Capped at ``n_accepted``: then every
    accepted answer is audited (a log line says so). :class:`InvalidInputError` for ``n_accepted < 0`` or an
    ε or δ outside (0, 1)."""
    n_accepted = check_int(n_accepted, "n_accepted", minimum=0)
    eps = check_real(risk, "the audit's error rate ε", low=0.0, high=1.0, low_open=True, high_open=True)
    dlt = check_real(delta, "the audit's δ", low=0.0, high=1.0, low_open=True, high_open=True)
    n = max(1, math.ceil(math.log(dlt) / math.log1p(-eps)))
    while n > 1 and binomial_cdf(0, n - 1, eps) <= dlt:
        n -= 1
    while binomial_cdf(0, n, eps) > dlt:
        n += 1
    if 0 < n_accepted < n:
        log.info(
            "all %d auto-accepted answer(s) are audited (none is accepted without a person): an audit that "
            "vouches for an error rate of %g at confidence %g needs %d",
            n_accepted,
            eps,
            1.0 - dlt,
            n,
        )
    return min(n, n_accepted)


def _check_audit(audit: Any) -> float | str:
    """``audit`` checked: ``"auto"``, or a share in [0, 1]."""
    if audit == AUDIT_AUTO and isinstance(audit, str):
        return AUDIT_AUTO
    if (
        isinstance(audit, bool)
        or not isinstance(audit, (int, float))
        or not math.isfinite(audit)
        or not 0.0 <= audit <= 1.0
    ):
        raise InvalidInputError(
            f"audit must be a share in [0, 1] or {AUDIT_AUTO!r} (sized by audit_size), got {audit!r}"
        )
    return float(audit)


def _applied_risk(trust: Mapping[str, Any] | None, auto_risk: float | None) -> float | None:
    """The ε auto-accept held: ``auto_risk``, else the detector's own; ``None`` under the old rule."""
    if trust is None:
        return None
    return float(trust["risk"]) if auto_risk is None else float(auto_risk)


def _audit_levels(trust: Mapping[str, Any] | None, auto_risk: float | None) -> tuple[float, float]:
    """The ε and δ an ``"auto"`` audit is sized for: the ε auto-accept holds and the trust decision's δ; under
    the old rule (no trust decision) :data:`novelty.trust.DEFAULT_RISK` and :data:`~novelty.trust.DEFAULT_DELTA`."""
    eps = _applied_risk(trust, auto_risk)
    delta = None if trust is None else trust.get("delta")
    return (
        DEFAULT_RISK if eps is None else float(eps),
        DEFAULT_DELTA if delta is None else float(delta),
    )


def audit_upper_bound(wrong: int, n: int, delta: float) -> float:
    """The one-sided exact (Clopper–Pearson) upper bound on an error rate at confidence 1 − ``delta``, from
    ``wrong`` errors among ``n`` checked answers: the ``p`` with ``P(Binomial(n, p) ≤ wrong) = δ`` (found by
    bisection on :func:`novelty.trust.binomial_cdf`, the exact test :func:`audit_size` sizes the audit with).
    0 of 45 at δ = 0.1 gives 5.0 % (``1 − δ^(1/n)``); 1 of 45, 8.4 %; ``1`` when every answer is wrong."""
    n = check_int(n, "n", minimum=1)
    wrong = check_int(wrong, "wrong", minimum=0)
    dlt = check_real(delta, "δ", low=0.0, high=1.0, low_open=True, high_open=True)
    if wrong >= n:
        return 1.0
    lo, hi = wrong / n, 1.0
    for _ in range(100):  # binomial_cdf falls as p grows
        mid = (lo + hi) / 2.0
        if binomial_cdf(wrong, n, mid) > dlt:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class AuditResult:
    """Auto-accepted answers checked by people: ``n`` audited images with a human label, ``wrong`` of them
    where the head's answer differs, and ``error_rate`` (``None`` when ``n`` is 0).

    ``upper``: what the audit was sized for (:func:`audit_size`): the one-sided exact (Clopper–Pearson) upper
    bound on the rule's error rate at confidence 1 − ``delta`` (:func:`audit_upper_bound`), ``delta`` the δ the
    export recorded for its audit (:data:`novelty.trust.DEFAULT_DELTA` where it recorded none, as for a
    share). ``risk``: the ε an ``"auto"`` audit was sized to vouch for (``None`` for a share); ``vouched``:
    ``upper ≤ risk``. A clean audit of 45 at δ = 0.1 gives ``upper`` 5.0 %. ``ci``: the two-sided 95 % Wilson
    interval, for reference (it answers another question: it is not what the audit was sized for)."""

    n: int
    wrong: int
    error_rate: float | None
    ci: tuple[float, float] | None
    unlabelled: int = 0
    upper: float | None = None
    delta: float = DEFAULT_DELTA
    risk: float | None = None

    @property
    def vouched(self) -> bool | None:
        """Whether the audit bounds the error rate by the ε it was sized for (``None``: no ε, or no audit)."""
        if self.risk is None or self.upper is None:
            return None
        return self.upper <= self.risk + 1e-12

    def describe(self) -> str:
        if self.n == 0 or self.upper is None or self.ci is None:
            return "no audited answer labelled by people"
        text = (
            f"{self.wrong} of {self.n} wrong (error rate {self.wrong / self.n:.1%}); error rate ≤ {self.upper:.1%} "
            f"at {1 - self.delta:.0%} confidence (one-sided exact)"
        )
        if self.risk is not None:
            text += f", {'within' if self.vouched else 'not within'} the ε = {self.risk:g} it was sized for"
        return text + f"; 95 % Wilson interval {self.ci[0]:.1%}–{self.ci[1]:.1%}"

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "wrong": self.wrong,
            "error_rate": self.error_rate,
            "upper": self.upper,
            "delta": self.delta,
            "risk": self.risk,
            "vouched": self.vouched,
            "ci": None if self.ci is None else list(self.ci),
            "unlabelled": self.unlabelled,
        }


def audit_result(export_dir: str | os.PathLike[str], labels: Mapping[str, str]) -> AuditResult:
    """Compare the audited images of an export (``export.json``'s ``auto_accept.audit``) with the labels people
    gave them (``{image id: label}``): the measured error rate of the auto-accept rule."""
    path = Path(export_dir) / EXPORT_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        section = manifest["auto_accept"]
        audited = section.get("audit", [])
        delta = section.get("audit_delta")
        risk = section.get("audit_risk")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InvalidInputError(f"{path}: not an export manifest with an auto-accept section ({e})") from None
    delta = DEFAULT_DELTA if delta is None else check_real(delta, f"{path}: audit_delta", low=0.0, high=1.0)
    risk = None if risk is None else check_real(risk, f"{path}: audit_risk", low=0.0, high=1.0)
    n = wrong = missing = 0
    for a in audited:
        human = labels.get(a["id"])
        if human is None:
            missing += 1
            continue
        n += 1
        wrong += human != a["model_label"]
    if n == 0:
        return AuditResult(0, 0, None, None, missing, None, delta, risk)
    upper = audit_upper_bound(wrong, n, delta)
    return AuditResult(n, wrong, wrong / n, _wilson(wrong, n), missing, upper, delta, risk)
