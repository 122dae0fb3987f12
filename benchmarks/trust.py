"""The trust benchmark: does a "trusted" prediction keep its stated error rate, before and after retrains?

    .venv/bin/python -m benchmarks.trust            # → benchmarks/results/trust.json and trust.md
    .venv/bin/python -m benchmarks.trust --quick    # 2 seeds, 20 splits, 2 turns (a smoke run)

Candidates (the competence score each thresholds; :mod:`novelty.trust`), every one also requiring "not novel":

- ``not-novel``: the legacy rule, no competence at all (trusted = not novel);
- ``confidence``: the head's calibrated top probability, threshold risk-controlled (SGR, Bonferroni grid);
- ``local-accuracy``: the share of the 10 nearest labelled training images that cross-fitted heads (5 folds,
  never fitted on them) got right and that lie within 1.2 times their own scale (their distance to their 10th
  nearest training image of another group), its thresholds starting at 1 − ε; ``local-accuracy/0.5``: the
  same with thresholds from 0.5 (to show what the floor does);
- ``confidence+local-accuracy``: the smaller of ``confidence`` and ``local-accuracy`` (the shipped rule before
  the class margin);
  ``confidence+local-accuracy/radius``: the previous release's form, one support radius for every neighbour
  (the 0.99 quantile of the calibration images' distance to their 10th nearest training image);
- ``confidence+local-accuracy+margin`` (**the shipped default**): the same, trusting only rows whose *class
  margin* (:func:`novelty.trust.class_margin`, the trust score of Jiang et al. 2018: distance to the nearest
  training image of another class over distance to the nearest one of the predicted class, among the
  ``MARGIN_K`` nearest) is at least :data:`novelty.trust.MARGIN`; the threshold chosen with the margin in place;
- ``aps-singleton``: split-conformal prediction sets (APS, level 1 − ε) on the same calibration split;
  trusted when the set holds one class (a coverage guarantee, not a selective-risk one: measured, not offered).
- ``mondrian-confidence``: k-means clusters of the calibration split (~60 images each) with a confidence
  threshold per cluster (Bonferroni over clusters), a test image taking its nearest centroid's.

Parts:

1. **Guarantee** on exchangeable data: a detector fitted once (Fashion-MNIST, ten classes, 2,000 images; the
   clean windshield frames, dry and wet); over ``--splits`` random calibration / test splits of held-out
   images (windshield: whole 25-frame blocks), the threshold is chosen on the calibration half and judged on the
   test half, for ε ∈ {0.01, 0.05, 0.1}: mean selective risk, its spread, and the share of splits above ε (the
   guarantee says ≤ δ = 0.1).
2. **Caught where it must be**: the clean-fitted windshield detector on tunnel, ice, fog and snow frames, which
   no label covers: share flagged, share trusted, selective risk among the trusted.
3. **Near-OOD with labels** (Fashion-MNIST without shirt and ankle boot): coverage and selective risk on the
   eight known classes, share of the two novel classes trusted (goal ≤ 0.05).
4. **Five turns** of the windshield flywheel (:mod:`benchmarks.flywheel`'s data: pool of tunnel / ice / fog /
   snow frames at three severities beside clean ones; 50 labels a turn chosen by ``diversity``, the whole
   detector refitted each turn on the training frames plus every label so far, a third of the groups held out to
   calibrate): coverage and selective risk per condition on the evaluation set, per turn, per candidate; and
   auto-accept (pool images trusted at ε) with the accuracy of the labels it would take.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import cpu_flags
from novelty.trust import MARGIN, SUPPORT_FACTOR

RESULTS = Path(__file__).resolve().parent / "results"
EPSILONS = (0.01, 0.05, 0.1)
RISK = 0.05
DELTA = 0.1
CANDIDATES = (
    "not-novel",
    "confidence",
    "local-accuracy/0.5",
    "local-accuracy",
    "confidence+local-accuracy",
    "confidence+local-accuracy/radius",
    "confidence+local-accuracy+margin",
    "aps-singleton",
    "mondrian-confidence",
)
AUTO_RULES = (
    "not-novel",
    "confidence",
    "local-accuracy",
    "confidence+local-accuracy",
    "confidence+local-accuracy+margin",
)
CONDITIONS = ("clean", "tunnel", "ice", "fog", "snow")
FMNIST_FIT, FMNIST_POOL = 2000, 3000
NEAR_CLASSES = (6, 9)  # shirt, ankle boot (as benchmarks/ood)
#: the embedding layers, the trust decision's support factor and the runtime under test (``--layers``,
#: ``--support``, ``--runtime``)
SETTINGS: dict[str, Any] = {"layers": "final", "support": SUPPORT_FACTOR, "runtime": "torch"}
_T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.0f} s] {msg}", flush=True)


# --- what a fitted detector says about held-out embeddings ------------------------------------------------
class Outputs:
    """Everything the candidates need about a set of images under one fitted detector: the combined novelty
    score, the head's probabilities, and the labels of the 10 nearest labelled training images."""

    def __init__(self, det: Any, x: np.ndarray, y: np.ndarray):
        from novelty.trust import LOCAL_K, MARGIN_K, class_indices, class_margin, local_accuracy, search

        st = det.state_
        raw = {s.name: s.score(x) for s in st.scorers}
        self.score = st.calibrator.combined_scores(raw)
        self.proba = st.head.predict_proba(x)
        self.classes = list(st.head.classes_)
        self.y = class_indices(np.asarray(y, dtype=object), self.classes)
        self.pred = self.proba.argmax(axis=1)
        self.correct = self.pred == self.y
        # one search for the local accuracy (its LOCAL_K nearest) and the class margin (its MARGIN_K nearest)
        d, pos = search(st.index, x, max(LOCAL_K, MARGIN_K))
        self.dist, self.pos = d[:, :LOCAL_K], pos[:, :LOCAL_K]
        self.local, self.kth = local_accuracy(self.dist, self.pos, st.train_correct)
        self.train_correct, self.x = st.train_correct, np.ascontiguousarray(x, dtype=np.float32)
        self.scales = st.trust.scales  # each training image's own scale (novelty.trust.neighbour_scales)
        self.factor = st.trust.factor  # how many times its own scale a neighbour vouches within
        self.margin = class_margin(d[:, :MARGIN_K], pos[:, :MARGIN_K], st.trust.labels, self.pred)

    def take(self, idx: np.ndarray) -> Outputs:
        out = object.__new__(Outputs)
        for k in ("score", "proba", "y", "pred", "correct", "local", "kth", "x", "dist", "pos", "margin"):
            setattr(out, k, getattr(self, k)[idx])
        out.classes, out.train_correct, out.scales = self.classes, self.train_correct, self.scales
        out.factor = self.factor
        return out

    def __len__(self) -> int:
        return int(self.y.shape[0])


def competences(rule: str, cal: Outputs, test: Outputs) -> tuple[np.ndarray, np.ndarray]:
    """The rule's competence of the calibration and the test rows, measured as calibrate_trust does."""
    from novelty.trust import competence, local_accuracy

    name = rule.split("/")[0]
    if name == "confidence":
        return competence(name, cal.proba), competence(name, test.proba)
    if rule.endswith("/radius"):
        # the previous release: one radius for every neighbour, the 0.99 quantile of this split's calibration
        # images' distance to their 10th nearest training image
        far = cal.kth[np.isfinite(cal.kth)]
        r = float(np.quantile(far, 0.99)) if far.size else math.inf
        loc_cal, _ = local_accuracy(cal.dist, cal.pos, cal.train_correct, r)
        loc_test, _ = local_accuracy(test.dist, test.pos, test.train_correct, r)
    else:  # each neighbour vouches within its own scale (the shipped rule)
        loc_cal, _ = local_accuracy(
            cal.dist, cal.pos, cal.train_correct, scales=cal.scales, factor=cal.factor
        )
        loc_test, _ = local_accuracy(
            test.dist, test.pos, test.train_correct, scales=test.scales, factor=cal.factor
        )
    return competence(name, cal.proba, loc_cal), competence(name, test.proba, loc_test)


def aps_scores(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """APS conformity score of each row's true class: the probability mass of the classes ranked at or above it."""
    order = np.argsort(-proba, axis=1)
    sorted_p = np.take_along_axis(proba, order, axis=1)
    cum = np.cumsum(sorted_p, axis=1)
    rank = np.argmax(order == labels[:, None], axis=1)
    return cum[np.arange(proba.shape[0]), rank]


def aps_singleton(cal: Outputs, test: Outputs, eps: float) -> np.ndarray:
    """Whether each test row's APS prediction set at level 1 − ε holds exactly one class."""
    s = np.sort(aps_scores(cal.proba, np.clip(cal.y, 0, None)))
    n = s.shape[0]
    k = math.ceil((n + 1) * (1 - eps))
    q = s[min(k, n) - 1] if k <= n else np.inf
    top = np.sort(test.proba, axis=1)[:, ::-1]
    size = 1 + (np.cumsum(top, axis=1)[:, :-1] < q).sum(axis=1)
    return size == 1


def mondrian(cal: Outputs, test: Outputs, alpha: float, eps: float, per_cluster: int = 60) -> np.ndarray:
    """Cluster-conditional risk control: k-means on the calibration embeddings (about ``per_cluster`` images a
    cluster); each cluster's confidence threshold chosen on its own images (Bonferroni over clusters × grid);
    a test image takes the threshold of its nearest centroid."""
    import faiss

    from novelty.trust import choose_threshold, grid, loo_p_values

    k = max(1, round(len(cal) / per_cluster))
    km = faiss.Kmeans(cal.x.shape[1], k, niter=20, seed=1, spherical=True)
    km.train(cal.x)
    _, a_cal = km.index.search(cal.x, 1)
    _, a_test = km.index.search(test.x, 1)
    a_cal, a_test = a_cal[:, 0], a_test[:, 0]
    novel_cal = loo_p_values(cal.score) < alpha
    conf_cal, conf_test = cal.proba.max(axis=1), test.proba.max(axis=1)
    out = np.zeros(len(test), dtype=bool)
    for j in range(k):
        m = a_cal == j
        lam = choose_threshold(
            conf_cal[m], cal.correct[m], novel_cal[m], eps, DELTA / k, grid("confidence", eps)
        )
        out |= (a_test == j) & (conf_test >= lam)
    return out


def decide(rule: str, cal: Outputs, test: Outputs, alpha: float, eps: float) -> np.ndarray:
    """Which test rows a candidate trusts, its threshold chosen on ``cal`` (novelty p-values against ``cal``)."""
    from novelty.calibration import conformal_p_values
    from novelty.trust import choose_threshold, grid, loo_p_values

    novel_test = conformal_p_values(cal.score, test.score) < alpha
    if rule == "not-novel":
        return ~novel_test
    if rule == "aps-singleton":
        return ~novel_test & aps_singleton(cal, test, eps)
    if rule == "mondrian-confidence":
        return ~novel_test & mondrian(cal, test, alpha, eps)

    novel_cal = loo_p_values(cal.score) < alpha
    base = rule.removesuffix("+margin")
    c_cal, c_test = competences(base, cal, test)
    if base != rule:  # and a class margin of at least MARGIN, gating the calibration rows too
        c_cal, c_test = c_cal * (cal.margin >= MARGIN), c_test * (test.margin >= MARGIN)
    name = base.split("/")[0]
    thresholds = grid("confidence", eps) if rule.endswith("/0.5") else grid(name, eps)
    lam = choose_threshold(c_cal, cal.correct, novel_cal, eps, DELTA, thresholds)
    return ~novel_test & (c_test >= lam)


def summary(trusted: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    n = int(trusted.sum())
    return {
        "coverage": float(trusted.mean()) if trusted.size else math.nan,
        "n_trusted": n,
        "selective_risk": float((~correct[trusted]).mean()) if n else None,
    }


# --- 1. the guarantee on exchangeable data ------------------------------------------------------------------
def guarantee(out: Outputs, units: np.ndarray, alpha: float, n_splits: int, seed: int) -> dict[str, Any]:
    """Random halves of ``out`` (by ``units``: whole blocks move together) as calibration / test."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(units)
    res: dict[str, Any] = {}
    for eps in EPSILONS:
        for rule in CANDIDATES:
            risks, covs, empty = [], [], 0
            for _ in range(n_splits):
                cal_units = rng.permutation(uniq)[: uniq.shape[0] // 2]
                m = np.isin(units, cal_units)
                cal, test = out.take(np.flatnonzero(m)), out.take(np.flatnonzero(~m))
                t = decide(rule, cal, test, alpha, eps)
                covs.append(float(t.mean()))
                if t.any():
                    risks.append(float((~test.correct[t]).mean()))
                else:
                    empty += 1
                    risks.append(0.0)  # nothing trusted: no error made
            r = np.asarray(risks)
            res[f"{rule}@{eps}"] = {
                "rule": rule,
                "eps": eps,
                "mean_risk": float(r.mean()),
                "sd_risk": float(r.std(ddof=1)),
                "p90_risk": float(np.percentile(r, 90)),
                "share_above_eps": float((r > eps).mean()),
                "mean_coverage": float(np.mean(covs)),
                "splits_nothing_trusted": empty,
            }
    return res


def embed_cached(name: str, images: Any, embedder: Any) -> np.ndarray:
    from novelty.datasets.cache import cache_root, write_cache

    path = cache_root("trust-bench") / f"{name}-{embedder.cache_key}.npy"
    if path.is_file():
        return np.load(path)
    x = embedder.embed(images)

    def write(fh: Any) -> None:
        np.save(fh, x)

    write_cache(path, write, owner="benchmarks.trust")
    return x


def fmnist_parts(embedder: Any) -> dict[str, Any]:
    from novelty.datasets import fashion_mnist

    tr_x, tr_y = fashion_mnist("train")
    te_x, te_y = fashion_mnist("test")
    rng = np.random.default_rng([0, 1])
    fit_idx = np.sort(rng.choice(tr_x.shape[0], FMNIST_FIT, replace=False))
    pool_idx = np.sort(rng.choice(te_x.shape[0], FMNIST_POOL, replace=False))
    x_fit = embed_cached(f"fmnist-fit{FMNIST_FIT}", list(tr_x[fit_idx]), embedder)
    say(f"Fashion-MNIST: {FMNIST_FIT} fitting images embedded")
    x_pool = embed_cached(f"fmnist-pool{FMNIST_POOL}", list(te_x[pool_idx]), embedder)
    say(f"Fashion-MNIST: {FMNIST_POOL} held-out images embedded")
    return {"x_fit": x_fit, "y_fit": tr_y[fit_idx], "x_pool": x_pool, "y_pool": te_y[pool_idx]}


def make_detector(embedder: Any, rule: str = "confidence+local-accuracy", **kw: Any) -> Any:
    from novelty.detector import NoveltyDetector

    kw.setdefault("trust_support", SETTINGS["support"])
    return NoveltyDetector(
        embedder=embedder, scorers=("knn",), alpha=0.05, calibration_fraction=1 / 3, seed=0, trust=rule, **kw
    )


def fit(det: Any, x: np.ndarray, y: Sequence[Any], groups: Sequence[str] | None = None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det.fit_embeddings(
            x, list(y), groups=None if groups is None else list(groups), ids=[str(i) for i in range(len(y))]
        )
    return det


# --- 4. five turns ----------------------------------------------------------------------------------------------
def five_turns(
    parts: dict[str, Any], embedder: Any, seed: int, turns: int, budget: int
) -> list[dict[str, Any]]:
    from benchmarks.flywheel import LABELS, as_pool, pool_indices, train_groups
    from novelty.flywheel.selection import select

    train, pool, ev = parts["train"], parts["pool"], parts["eval"]
    pool_idx = pool_indices(len(pool), seed)
    labelled = np.zeros(0, dtype=np.int64)
    rows = []
    for turn in range(turns + 1):
        new = pool.take(labelled)
        x = np.concatenate([train.x, new.x])
        y = np.concatenate([train.y, new.y])
        groups = train_groups(train) + [f"pool-block:{b}" for b in new.block]  # near-duplicates together
        det = fit(make_detector(embedder), x, LABELS[y], groups)
        cal_pos = np.array([int(i) for i in det.calibration_ids_])
        cal_cond = np.concatenate([np.array(["clean"] * len(train)), new.condition])[cal_pos]
        cal = Outputs(det, x[cal_pos], LABELS[y[cal_pos]])
        test = Outputs(det, ev.x, LABELS[ev.y])
        row: dict[str, Any] = {
            "turn": turn,
            "n_labels": int(labelled.shape[0]),
            "labelled_conditions": {c: int((new.condition == c).sum()) for c in CONDITIONS},
            "calibration_conditions": {c: int((cal_cond == c).sum()) for c in CONDITIONS},
            "accuracy": {c: float(test.correct[ev.condition == c].mean()) for c in CONDITIONS},
            "flagged": {},
            "rules": {},
        }
        from novelty.calibration import conformal_p_values

        novel = conformal_p_values(cal.score, test.score) < det.alpha
        row["flagged"] = {c: float(novel[ev.condition == c].mean()) for c in CONDITIONS}
        for rule in CANDIDATES:
            t = decide(rule, cal, test, det.alpha, RISK)
            per = {c: summary(t[ev.condition == c], test.correct[ev.condition == c]) for c in CONDITIONS}
            per["overall"] = summary(t, test.correct)
            row["rules"][rule] = per
        # auto-accept on this turn's pool (what is left unlabelled): trusted at ε, by the shipped rule
        rest = np.setdiff1d(pool_idx, labelled)
        po = Outputs(det, pool.x[rest], LABELS[pool.y[rest]])
        auto = {}
        for rule in AUTO_RULES:
            t = decide(rule, cal, po, det.alpha, RISK)
            auto[rule] = {
                "share": float(t.mean()),
                "n": int(t.sum()),
                "accuracy": float(po.correct[t].mean()) if t.any() else None,
            }
        row["auto_accept"] = auto
        rows.append(row)
        say(
            f"seed {seed} turn {turn}: labels {labelled.shape[0]}, acc "
            + " ".join(f"{c} {row['accuracy'][c]:.2f}" for c in CONDITIONS)
            + " | risk c+l "
            + " ".join(
                f"{c} {(row['rules']['confidence+local-accuracy'][c]['selective_risk'] or 0):.3f}"
                for c in CONDITIONS
            )
        )
        if turn == turns:
            break
        p = as_pool(det, pool, rest)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sel = select(p, budget, "diversity", seed=seed + turn)
        labelled = np.concatenate([labelled, rest[np.asarray(sel.positions, dtype=np.int64)]])
    return rows


def run(n_splits: int, seeds: Sequence[int], turns: int, budget: int = 50) -> dict[str, Any]:
    import novelty
    from benchmarks.flywheel import LABELS, build_data, train_groups

    embedder = novelty.Embedder(num_workers=1, layers=SETTINGS["layers"], runtime=SETTINGS["runtime"])
    out: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_flags": cpu_flags()},
        "settings": {
            "risk": RISK,
            "delta": DELTA,
            "epsilons": EPSILONS,
            "splits": n_splits,
            "seeds": list(seeds),
            "layers": SETTINGS["layers"],
            "support_factor": SETTINGS["support"],
            "runtime": SETTINGS["runtime"],
        },
    }
    # 1 + 3: Fashion-MNIST
    fm = fmnist_parts(embedder)
    det = fit(make_detector(embedder), fm["x_fit"], fm["y_fit"])
    o = Outputs(det, fm["x_pool"], fm["y_pool"])
    out["guarantee_fmnist"] = guarantee(o, np.arange(len(o)), det.alpha, n_splits, seed=0)
    say("guarantee on Fashion-MNIST done")
    known = ~np.isin(fm["y_fit"], NEAR_CLASSES)
    det_near = fit(make_detector(embedder), fm["x_fit"][known], fm["y_fit"][known])
    in_pool = ~np.isin(fm["y_pool"], NEAR_CLASSES)
    near: dict[str, Any] = {}
    rng = np.random.default_rng(3)
    o_in = Outputs(det_near, fm["x_pool"][in_pool], fm["y_pool"][in_pool])
    o_out = Outputs(det_near, fm["x_pool"][~in_pool], fm["y_pool"][~in_pool])
    for rule in CANDIDATES:
        covs, risks, novel_trusted = [], [], []
        for _ in range(n_splits):
            m = rng.random(len(o_in)) < 0.5
            cal, test = o_in.take(np.flatnonzero(m)), o_in.take(np.flatnonzero(~m))
            t = decide(rule, cal, test, det_near.alpha, RISK)
            covs.append(float(t.mean()))
            risks.append(float((~test.correct[t]).mean()) if t.any() else 0.0)
            novel_trusted.append(float(decide(rule, cal, o_out, det_near.alpha, RISK).mean()))
        near[rule] = {
            "coverage_known": float(np.mean(covs)),
            "selective_risk_known": float(np.mean(risks)),
            "share_above_eps": float((np.asarray(risks) > RISK).mean()),
            "novel_classes_trusted": float(np.mean(novel_trusted)),
        }
    out["near_ood_fmnist"] = near
    say("near-OOD done")

    # 1 + 2: windshield
    parts, info = build_data(embedder)
    out["windshield_data"] = info
    train, pool, ev = parts["train"], parts["pool"], parts["eval"]
    det_w = fit(make_detector(embedder), train.x, LABELS[train.y], train_groups(train))
    clean = np.concatenate(
        [np.flatnonzero(pool.condition == "clean"), len(pool) + np.flatnonzero(ev.condition == "clean")]
    )
    xs = np.concatenate([pool.x, ev.x])[clean]
    ys = np.concatenate([pool.y, ev.y])[clean]
    units = np.concatenate([pool.block, ev.block + 10_000])[clean]
    ow = Outputs(det_w, xs, LABELS[ys])
    out["guarantee_windshield"] = guarantee(ow, units, det_w.alpha, n_splits, seed=1)
    say("guarantee on clean windshield frames done")
    caught: dict[str, Any] = {}
    cal_pos = np.array([int(i) for i in det_w.calibration_ids_])
    cal = Outputs(det_w, train.x[cal_pos], LABELS[train.y[cal_pos]])
    test = Outputs(det_w, ev.x, LABELS[ev.y])
    from novelty.calibration import conformal_p_values

    novel = conformal_p_values(cal.score, test.score) < det_w.alpha
    for rule in CANDIDATES:
        t = decide(rule, cal, test, det_w.alpha, RISK)
        caught[rule] = {
            c: {
                "flagged": float(novel[ev.condition == c].mean()),
                **summary(t[ev.condition == c], test.correct[ev.condition == c]),
            }
            for c in CONDITIONS
        }
    out["caught_windshield"] = caught
    # 4: five turns
    out["five_turns"] = {str(s): five_turns(parts, embedder, s, turns, budget) for s in seeds}
    out["seconds"] = round(time.perf_counter() - _T0, 1)
    return out


def _f(x: Any, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def to_markdown(r: dict[str, Any]) -> str:
    st = r["settings"]
    lines = [
        f"# Trust benchmark ({r['created']})",
        "",
        f"Embedding layers `{st.get('layers', 'final')}`, support factor {st.get('support_factor', SUPPORT_FACTOR)}, "
        f"runtime `{st.get('runtime', 'torch')}`; CPU flags: {', '.join(r['machine'].get('cpu_flags', [])) or '—'}.",
        "",
    ]
    for key, title in (
        ("guarantee_fmnist", "Fashion-MNIST (10 classes)"),
        ("guarantee_windshield", "clean windshield frames"),
    ):
        lines += [
            f"## Guarantee on exchangeable data: {title}, {r['settings']['splits']} splits, δ = {DELTA}",
            "",
            "| rule | ε | mean selective risk ± sd | 90th pct | splits above ε | mean coverage |",
            "|---|---|---|---|---|---|",
        ]
        for v in r[key].values():
            lines.append(
                f"| {v['rule']} | {v['eps']} | {_f(v['mean_risk'], 4)} ± {_f(v['sd_risk'], 4)} | {_f(v['p90_risk'], 4)} "
                f"| {_f(v['share_above_eps'], 2)} | {_f(v['mean_coverage'])} |"
            )
        lines.append("")
    lines += [
        "## Near-OOD with labels (Fashion-MNIST without shirt and ankle boot), ε = 0.05",
        "",
        "| rule | coverage (known) | selective risk (known) | splits above ε | novel classes trusted |",
        "|---|---|---|---|---|",
    ]
    for rule, v in r["near_ood_fmnist"].items():
        lines.append(
            f"| {rule} | {_f(v['coverage_known'])} | {_f(v['selective_risk_known'], 4)} | {_f(v['share_above_eps'], 2)} | {_f(v['novel_classes_trusted'])} |"
        )
    lines += [
        "",
        "## Conditions nobody labelled (clean-fitted windshield detector), ε = 0.05",
        "",
        "| rule | " + " | ".join(f"{c}: flagged / trusted / risk" for c in CONDITIONS) + " |",
        "|---|" + "---|" * len(CONDITIONS),
    ]
    for rule, per in r["caught_windshield"].items():
        lines.append(
            f"| {rule} | "
            + " | ".join(
                f"{_f(per[c]['flagged'], 2)} / {_f(per[c]['coverage'], 2)} / {_f(per[c]['selective_risk'])}"
                for c in CONDITIONS
            )
            + " |"
        )
    seeds = list(r["five_turns"])
    turns = len(r["five_turns"][seeds[0]])
    lines += [
        "",
        f"## Five turns (seeds {', '.join(seeds)}), ε = 0.05: selective risk per condition (coverage), mean over seeds",
        "",
    ]
    for rule in CANDIDATES:
        lines += [
            f"### {rule}",
            "",
            "| turn | " + " | ".join(CONDITIONS) + " | overall | worst seed×condition risk |",
            "|---|" + "---|" * (len(CONDITIONS) + 2),
        ]
        for t in range(turns):
            cells = []
            worst = 0.0
            for c in [*CONDITIONS, "overall"]:
                risks = [r["five_turns"][s][t]["rules"][rule][c]["selective_risk"] for s in seeds]
                covs = [r["five_turns"][s][t]["rules"][rule][c]["coverage"] for s in seeds]
                rr = [x for x in risks if x is not None]
                if c != "overall":
                    worst = max([worst, *rr])
                cells.append(f"{_f(float(np.mean(rr)) if rr else None)} ({_f(float(np.mean(covs)), 2)})")
            lines.append(f"| {t} | " + " | ".join(cells) + f" | {_f(worst)} |")
        lines.append("")
    lines += [
        "### Trusted and wrong / trusted, summed over the seeds",
        "",
        "A condition's mean risk above weighs a seed with one trusted frame like a seed with a hundred; these are "
        "the counts behind it.",
        "",
        "| rule | turn | " + " | ".join(CONDITIONS) + " |",
        "|---|---|" + "---|" * len(CONDITIONS),
    ]
    for rule in ("not-novel", "confidence+local-accuracy/radius", "confidence+local-accuracy"):
        for t in range(turns):
            cells = []
            for c in CONDITIONS:
                rows = [r["five_turns"][s][t]["rules"][rule][c] for s in seeds]
                n = sum(x["n_trusted"] for x in rows)
                wrong = sum(round((x["selective_risk"] or 0.0) * x["n_trusted"]) for x in rows)
                cells.append(f"{wrong} / {n}")
            lines.append(f"| {rule} | {t} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Auto-accept on the unlabelled pool (trusted at ε = 0.05): accuracy of the labels taken (share of the pool)",
        "",
        "| turn | " + " | ".join(AUTO_RULES) + " |",
        "|---" * (len(AUTO_RULES) + 1) + "|",
    ]
    for t in range(turns):
        cells = []
        for rule in AUTO_RULES:
            acc = [r["five_turns"][s][t]["auto_accept"][rule]["accuracy"] for s in seeds]
            sh = [r["five_turns"][s][t]["auto_accept"][rule]["share"] for s in seeds]
            acc = [a for a in acc if a is not None]
            cells.append(
                f"{_f(min(acc) if acc else None)}–{_f(max(acc) if acc else None)} ({_f(float(np.mean(sh)), 2)})"
            )
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", f"Run time {r['seconds']} s; CPU flags {' '.join(r['machine']['cpu_flags'])}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--quick", action="store_true", help="2 seeds, 20 splits, 2 turns")
    ap.add_argument("--splits", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--layers", default="final", help="embedding layers, e.g. final+s16 (default final)")
    ap.add_argument(
        "--support",
        type=float,
        default=SUPPORT_FACTOR,
        help=f"trust support factor (default {SUPPORT_FACTOR})",
    )
    ap.add_argument(
        "--runtime",
        default="torch",
        help="the runtime every detector embeds with, fitted and calibrated with it (default torch)",
    )
    a = ap.parse_args(argv)
    splits, seeds, turns = (20, 2, 2) if a.quick else (a.splits, a.seeds, a.turns)
    SETTINGS.update(layers=a.layers, support=a.support, runtime=a.runtime)
    r = run(splits, list(range(seeds)), turns)
    default = a.layers == "final" and a.support == SUPPORT_FACTOR and a.runtime == "torch"
    extra = "" if default else f" --layers {a.layers} --support {a.support:g}"
    if a.runtime != "torch":
        extra += f" --runtime {a.runtime}"
    r["command"] = "python -m benchmarks.trust" + (" --quick" if a.quick else "") + extra
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = ("trust_quick" if a.quick else "trust") + ("" if default else f"-{a.layers}-{a.support:g}")
    if a.runtime != "torch":
        name += f"-{a.runtime}"
    (out / f"{name}.json").write_text(json.dumps(r, indent=1, default=float) + "\n")
    (out / f"{name}.md").write_text(to_markdown(r))
    print(to_markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
