"""Near-OOD Fashion-MNIST (shirt and ankle boot never labelled): three more signals tried against the novel
classes that the trust decision still trusts, each added to the shipped rule and its threshold chosen again;
and what each costs on clean windshield frames.

    .venv/bin/python -m benchmarks.trust_near --layers final+s16 --support 1.35 [--splits 30]

The data, detector and splits are :mod:`benchmarks.trust`'s (2,000 fitting images of the eight known classes,
the held-out pool split in random halves for calibration and test; ε = 0.05, δ = 0.1). Signals:

- **fold agreement** (disagreement between heads fitted on different folds): the five heads of the
  cross-fitting, each fitted without one fold of the head's fitting part; an image is trusted only when at
  least ``need`` of them predict what the head predicts;
- **class-conditional novelty** (a Mondrian conformal p-value per predicted class): the novelty score against
  the calibration images the head assigns to the same class; trusted only when that p-value is ≥ ``a``;
- **class margin** (the trust score of Jiang et al. 2018, as the library reads it:
  :func:`novelty.trust.class_margin` over the ``MARGIN_K`` nearest training images): the distance to the nearest
  training image of another class over the distance to the nearest one of the predicted class; trusted only
  when ≥ ``q``.

The rule the signals are added to is the shipped one without its margin (``confidence+local-accuracy``).

Each signal gates the competence of the calibration rows as well (a row it stops counts as not trusted), so the
threshold, chosen again on the calibration half, keeps the guarantee.

The same signals on the clean windshield frames (the clean-fitted detector of :mod:`benchmarks.trust`, its
held-out clean frames split by whole blocks), where what a signal costs is coverage (goal ≥ 0.95).

Prints one line per case, signal and setting: coverage of the known classes, selective risk among them, and,
near-OOD, the share of novel-class images trusted (goal ≤ 0.05).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

import numpy as np

from benchmarks import trust as T


def class_p_values(cal: T.Outputs, rows: T.Outputs, leave_one_out: bool = False) -> np.ndarray:
    """Each row's novelty p-value against the calibration rows the head predicts the same class for
    (``leave_one_out``: ``rows`` are those calibration rows, each against the others)."""
    from novelty.calibration import conformal_p_values
    from novelty.trust import loo_p_values

    p = np.ones(len(rows))
    for c in np.unique(rows.pred):
        m = rows.pred == c
        ref = cal.score[cal.pred == c]
        p[m] = loo_p_values(rows.score[m]) if leave_one_out else conformal_p_values(ref, rows.score[m])
    return p


def fold_votes(det: Any, x_fit: np.ndarray, y_fit: np.ndarray, rows: list[T.Outputs], folds: int = 5) -> list:
    """How many of ``folds`` heads, each fitted without one fold of the head's fitting part, predict what the
    head predicts, for each row of each of ``rows``."""
    from novelty.params import clone

    st = det.state_
    pos = np.array([int(i) for i in st.train_ids])
    x, y = x_fit[pos], y_fit[pos]
    fold = np.random.default_rng([0, 17]).permutation(len(y)) % folds
    classes = list(st.head.classes_)
    heads = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in range(folds):
            heads.append(clone(st.head).fit(x[fold != f], y[fold != f].tolist()))
    out = []
    for o in rows:
        preds = [
            np.array([classes.index(h.classes_[j]) for j in h.predict_proba(o.x).argmax(1)]) for h in heads
        ]
        out.append((np.stack(preds) == o.pred[None]).sum(0))
    return out


class Case:
    """One detector, the held-out rows of known classes (split in calibration and test halves by ``units``) and,
    where there are any, rows of classes nobody labelled; with each extra signal worked out for every row."""

    def __init__(
        self,
        name: str,
        det: Any,
        x_fit: np.ndarray,
        y_fit: np.ndarray,
        known: T.Outputs,
        units: Any,
        novel: T.Outputs | None = None,
    ):
        self.name, self.det, self.known, self.novel, self.units = name, det, known, novel, np.asarray(units)
        rows = [known] if novel is None else [known, novel]
        self.votes = fold_votes(det, x_fit, y_fit, rows)


def evaluate(case: Case, splits: int, name: str, gate: Any) -> None:
    """``gate(cal, rows, which, idx, is_cal)`` → the rows the extra signal lets through (``which`` 0: known,
    1: novel; ``idx`` their positions)."""
    from novelty.calibration import conformal_p_values
    from novelty.trust import choose_threshold, grid, loo_p_values

    rule, alpha = "confidence+local-accuracy", case.det.alpha
    rng = np.random.default_rng(3)
    uniq = np.unique(case.units)
    covs, risks, novel = [], [], []
    for _ in range(splits):
        m = np.isin(case.units, rng.permutation(uniq)[: uniq.size // 2])
        ci, ti = np.flatnonzero(m), np.flatnonzero(~m)
        cal, test = case.known.take(ci), case.known.take(ti)
        c_cal, c_test = T.competences(rule, cal, test)
        g_cal, g_test = gate(cal, cal, 0, ci, True), gate(cal, test, 0, ti, False)
        novel_cal = loo_p_values(cal.score) < alpha
        lam = choose_threshold(c_cal * g_cal, cal.correct, novel_cal, T.RISK, T.DELTA, grid(rule, T.RISK))
        t = (conformal_p_values(cal.score, test.score) >= alpha) & g_test & (c_test >= lam)
        covs.append(t.mean())
        risks.append((~test.correct[t]).mean() if t.any() else 0.0)
        if case.novel is not None:
            o = case.novel
            _, c_out = T.competences(rule, cal, o)
            g_out = gate(cal, o, 1, np.arange(len(o)), False)
            novel.append(((conformal_p_values(cal.score, o.score) >= alpha) & g_out & (c_out >= lam)).mean())
    tail = f", novel classes trusted {np.mean(novel):.3f}" if novel else ""
    print(
        f"{case.name}, {name}: coverage {np.mean(covs):.3f}, selective risk {np.mean(risks):.4f}{tail}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    import novelty
    from benchmarks.flywheel import LABELS, build_data, train_groups

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="final")
    ap.add_argument("--support", type=float, default=T.SUPPORT_FACTOR)
    ap.add_argument("--splits", type=int, default=30)
    a = ap.parse_args(argv)
    T.SETTINGS.update(layers=a.layers, support=a.support)
    emb = novelty.Embedder(num_workers=1, layers=a.layers)
    print(f"layers {a.layers}, support {a.support:g}, {a.splits} splits", flush=True)

    fm = T.fmnist_parts(emb)
    known = ~np.isin(fm["y_fit"], T.NEAR_CLASSES)
    x_fit, y_fit = fm["x_fit"][known], fm["y_fit"][known]
    det = T.fit(T.make_detector(emb), x_fit, y_fit)
    in_pool = ~np.isin(fm["y_pool"], T.NEAR_CLASSES)
    o_in = T.Outputs(det, fm["x_pool"][in_pool], fm["y_pool"][in_pool])
    o_out = T.Outputs(det, fm["x_pool"][~in_pool], fm["y_pool"][~in_pool])
    cases = [Case("near-OOD Fashion-MNIST", det, x_fit, y_fit, o_in, np.arange(len(o_in)), o_out)]

    # the clean windshield frames, split by whole blocks (as the guarantee of benchmarks.trust)
    parts, _ = build_data(emb)
    train, pool, ev = parts["train"], parts["pool"], parts["eval"]
    y_train = LABELS[train.y]
    det_w = T.fit(T.make_detector(emb), train.x, y_train, train_groups(train))
    clean = np.concatenate(
        [np.flatnonzero(pool.condition == "clean"), len(pool) + np.flatnonzero(ev.condition == "clean")]
    )
    xs, ys = np.concatenate([pool.x, ev.x])[clean], np.concatenate([pool.y, ev.y])[clean]
    units = np.concatenate([pool.block, ev.block + 10_000])[clean]
    cases.append(Case("clean windshield", det_w, train.x, y_train, T.Outputs(det_w, xs, LABELS[ys]), units))

    for case in cases:
        gates: list[tuple[str, Any]] = [
            (
                "no signal (the rule without a margin)",
                lambda cal, rows, w, idx, is_cal: np.ones(len(rows), bool),
            )
        ]
        gates += [
            (
                f"fold agreement, {need} of 5",
                lambda cal, rows, w, idx, is_cal, c=case, n=need: c.votes[w][idx] >= n,
            )
            for need in (4, 5)
        ]
        gates += [
            (
                f"class-conditional novelty, p ≥ {p}",
                lambda cal, rows, w, idx, is_cal, p=p: class_p_values(cal, rows, leave_one_out=is_cal) >= p,
            )
            for p in (0.02, 0.05)
        ]
        gates += [
            (f"class margin ≥ {q}", lambda cal, rows, w, idx, is_cal, q=q: rows.margin >= q)
            for q in (1.1, 1.2)
        ]
        for name, gate in gates:
            evaluate(case, a.splits, name, gate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
