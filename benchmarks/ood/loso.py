"""Leave-one-scenario-out (LOSO): choose a default on all scenarios but one, evaluate it on the one held out.

    python -m benchmarks.ood.loso --embed-only            # embed every scenario with every backbone (cached)
    python -m benchmarks.ood.loso --out benchmarks/results # the protocol → loso.md / loso.json

A *candidate* is one choice of backbone (the four whose weights ship offline), feature layer (the pooled
embedding, or it concatenated with a pooled inner stage) and method (kNN with k and the aggregation of the k
distances, local kNN, Mahalanobis, their combinations; with labels also class-conditional kNN and
class-conditional Mahalanobis). Every candidate is fitted on the fitting part of each scenario minus the
calibration part (as :class:`~novelty.NoveltyDetector` holds it out) and measured by AUROC on every novel set.
A scenario's number is the mean AUROC over its novel sets.

For each scenario ``h`` in turn:

1. the *unlabelled default* is the candidate without labels with the highest mean AUROC over the scenarios
   other than ``h``; the *labelled default* is the candidate (with or without labels) with the highest mean
   over the labelled scenarios other than ``h`` (it applies where labels exist);
2. on ``h`` the default that applies (labelled when ``h`` has labels) is evaluated, beside the best peer on
   the same features and the best peer on today's embeddings (``tf_efficientnet_lite0``, pooled).

Nothing about ``h`` enters the choice. The false-alarm rate at ``alpha`` (conformal p-values from the
calibration part, on the held-out in-distribution images) is measured for every candidate.

Scenario sizes are reduced (``LOSO_FRACTION``, a fixed share of each image pool, the same images for
every backbone) so that four backbones can be embedded on two cores; street severity 3 is left out (every
method but one is at 1.000 there).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.ood.features import StageFeatureCache, layer_features
from benchmarks.ood.scenarios import Part, Scenario, build_scenarios
from novelty.calibration import calibration_split
from novelty.datasets import DatasetNotInstalledError
from novelty.datasets.cache import write_cache
from novelty.errors import NoveltyError

__all__ = ["BACKBONES", "LOSO_FRACTION", "LOSO_SCENARIOS", "loso_scenarios", "main"]

log = logging.getLogger(__name__)

#: The backbones whose ImageNet weights ship offline (novelty/weights.py), today's default first.
BACKBONES: tuple[str, ...] = (
    "tf_efficientnet_lite0",
    "mobilenetv2_100",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
)
LOSO_SCENARIOS: tuple[str, ...] = (
    "fmnist-ood",
    "fmnist-near",
    "mnist-near",
    "animals-near",
    "textile",
    "street",
)

#: Share of each image pool kept (by a fixed per-pool draw, so that scenarios sharing a pool share images).
LOSO_FRACTION: dict[str, float] = {
    "fashion-mnist-train": 0.25,
    "fashion-mnist-test": 0.5,
    "mnist-5k": 0.4,
    "animal-mnist": 0.4,
    "textile-global": 0.5,
    "textile-local": 0.5,
}


def _keep(part: Part, seed: int) -> Part:
    frac = LOSO_FRACTION.get(part.pool.name, 1.0)
    if frac >= 1.0:
        return part
    u = np.random.default_rng([seed, 99, sum(map(ord, part.pool.name))]).random(part.pool.size)
    mask = u[part.index] < frac
    return Part(
        part.pool,
        part.index[mask],
        None if part.groups is None else part.groups[mask],
        None if part.labels is None else part.labels[mask],
    )


def loso_scenarios(names: Sequence[str] = LOSO_SCENARIOS, *, seed: int = 0) -> list[Scenario]:
    """The protocol's scenarios: the benchmark's full-size scenarios, each pool cut to ``LOSO_FRACTION``,
    street at severity 1 only."""
    out = []
    for sc in build_scenarios(list(names), size="full", seed=seed):
        test_out = {k: _keep(p, seed) for k, p in sc.test_out.items() if not k.endswith("-s3")}
        out.append(replace(sc, fit=_keep(sc.fit, seed), test_in=_keep(sc.test_in, seed), test_out=test_out))
    return out


@dataclass
class Features:
    """One scenario's features by one backbone: fit (with calibration), test-in and novel sets, by kind."""

    fit: dict[str, np.ndarray]
    test_in: dict[str, np.ndarray]
    test_out: dict[str, dict[str, np.ndarray]]


def scenario_features(sc: Scenario, cache: StageFeatureCache) -> Features:
    return Features(
        fit=cache.get(sc.fit.pool, sc.fit.index),
        test_in=cache.get(sc.test_in.pool, sc.test_in.index),
        test_out={k: cache.get(p.pool, p.index) for k, p in sc.test_out.items()},
    )


def embed_all(scenarios: Sequence[Scenario], backbones: Sequence[str]) -> dict[str, int]:
    """Embed every part of every scenario with every backbone (cached); returns images embedded per backbone."""
    from novelty.embedder import Embedder

    done = {}
    for bb in backbones:
        cache = StageFeatureCache(Embedder(bb), progress=False)
        for sc in scenarios:
            t0 = time.perf_counter()
            scenario_features(sc, cache)
            log.info("%s / %s: %.0f s", bb, sc.name, time.perf_counter() - t0)
        done[bb] = cache.embedded
    return done


# --- candidates -----------------------------------------------------------------------------------------
ScorerSpec = tuple[str, tuple[tuple[str, Any], ...]]  # (registry name, sorted params)

LAYERS: tuple[str, ...] = ("final", "final+s16", "final+s32")


def _spec(name: str, **params: Any) -> ScorerSpec:
    return (name, tuple(sorted(params.items())))


def spec_label(spec: ScorerSpec) -> str:
    name, params = spec
    short = {"aggregate": "", "k": "k=", "shrinkage": "shrink=", "class_conditional": "classes="}
    inner = ",".join(f"{short.get(k, k + '=')}{v}" for k, v in params)
    return f"{name}({inner})" if inner else name


def single_specs() -> list[ScorerSpec]:
    """Every single-scorer method tried. Those that use labels (``knn-per-class``, ``logit``, ``mahalanobis``
    with ``class_conditional=True``) are tried only where a scenario has them."""
    specs = [_spec("knn", k=1, aggregate="kth")]
    specs += [_spec("knn", k=k, aggregate=a) for k in (5, 10, 20, 50) for a in ("kth", "mean")]
    specs += [_spec("knn-local", k=k) for k in (5, 10, 20)]
    specs += [
        _spec("mahalanobis", shrinkage=s, class_conditional=c)
        for c in (False, True)
        for s in (0.001, 0.01, 0.05, 0.3)
    ]
    specs += [_spec("knn-per-class", k=k, aggregate=a) for k in (5, 10, 20) for a in ("kth", "mean")]
    specs += [_spec("logit", score=s, l2=l2) for s in ("max-logit", "energy") for l2 in (1e-3, 1e-4)]
    return specs


def uses_labels(spec: ScorerSpec) -> bool:
    name, params = spec
    return name in ("knn-per-class", "logit") or (name == "mahalanobis" and dict(params)["class_conditional"])


_KNN = _spec("knn", k=10, aggregate="mean")
_LOCAL = _spec("knn-local", k=20)
_MAHA = _spec("mahalanobis", shrinkage=0.3, class_conditional=True)
_LOGIT = _spec("logit", score="max-logit", l2=1e-4)

#: Combinations (the mean of the members' robust z-scores, as the detector combines scorers).
COMBINATIONS: tuple[tuple[ScorerSpec, ...], ...] = (
    (_spec("knn", k=5, aggregate="kth"), _spec("knn-local", k=10)),
    (_KNN, _LOCAL),
    (_KNN, _spec("mahalanobis", shrinkage=0.3, class_conditional=False)),
    (_KNN, _MAHA),
    (_spec("knn-per-class", k=10, aggregate="mean"), _MAHA),
    (_KNN, _LOGIT),
    (_LOCAL, _LOGIT),
    (_spec("knn-per-class", k=10, aggregate="mean"), _LOGIT),
)

#: Today's default: NoveltyDetector() = tf_efficientnet_lite0, pooled embedding, KNNScorer(k=5, "kth").
TODAY = ("tf_efficientnet_lite0", "final", "knn(kth,k=5)")


def method_label(members: Sequence[ScorerSpec]) -> str:
    return " + ".join(spec_label(s) for s in members)


# --- measuring ------------------------------------------------------------------------------------------
@dataclass
class Scored:
    cal: np.ndarray
    test_in: np.ndarray
    test_out: dict[str, np.ndarray]


def _measure(sc: Scored, alpha: float) -> dict[str, Any]:
    from novelty.calibration import conformal_p_values
    from novelty.metrics import auroc, false_alarm_rate

    aurocs = {k: auroc(sc.test_in, v) for k, v in sc.test_out.items()}
    return {
        "auroc": aurocs,
        "mean_auroc": float(np.mean(list(aurocs.values()))),
        "false_alarm": false_alarm_rate(conformal_p_values(sc.cal, sc.test_in), alpha),
    }


@dataclass
class Split:
    """One scenario's features in one layer, divided as the detector divides them."""

    fit: np.ndarray
    cal: np.ndarray
    labels: np.ndarray | None
    test_in: np.ndarray
    test_out: dict[str, np.ndarray]
    fit_rows: np.ndarray
    cal_rows: np.ndarray


def make_split(sc: Scenario, feats: Features, layer: str) -> Split:
    x = layer_features(feats.fit, layer)
    groups = None if sc.fit.groups is None else list(sc.fit.groups)
    fit_rows, cal_rows = calibration_split(x.shape[0], sc.calibration_fraction, groups=groups, seed=sc.seed)
    return Split(
        fit=x[fit_rows],
        cal=x[cal_rows],
        labels=None if sc.fit.labels is None else np.asarray(sc.fit.labels)[fit_rows],
        test_in=layer_features(feats.test_in, layer),
        test_out={k: layer_features(v, layer) for k, v in feats.test_out.items()},
        fit_rows=fit_rows,
        cal_rows=cal_rows,
    )


def fast_single_scores(split: Split, sets: Sequence[np.ndarray]) -> dict[ScorerSpec, list[np.ndarray]]:
    """Scores of every single method on each array of ``sets``, computed with one neighbour search per class
    and one eigendecomposition per covariance instead of one per parameter value. Equal to fitting each
    registered scorer (tests/project/test_loso.py checks it against the scorer classes)."""
    from novelty.index import EmbeddingIndex
    from novelty.scorers import create_scorer
    from novelty.scorers.mahalanobis import class_codes

    specs = [sp for sp in single_specs() if split.labels is not None or not uses_labels(sp)]
    out: dict[ScorerSpec, list[np.ndarray]] = {}
    knn_specs = [sp for sp in specs if sp[0] in ("knn", "knn-local")]
    kmax = max(dict(sp[1])["k"] for sp in knn_specs)
    index = EmbeddingIndex().add(split.fit)
    found = [index.search(x, kmax) for x in sets]
    own, _ = index.search(split.fit, kmax, exclude_self=True)
    for sp in knn_specs:
        p = dict(sp[1])
        k = p["k"]
        if sp[0] == "knn":
            out[sp] = [
                (d[:, k - 1] if p["aggregate"] == "kth" else d[:, :k].mean(1)).astype(np.float64)
                for d, _ in found
            ]
        else:
            kth = own[:, k - 1].astype(np.float64)
            out[sp] = [d[:, k - 1].astype(np.float64) / (kth[i[:, :k]].mean(1) + 1e-6) for d, i in found]
    class_specs = [sp for sp in specs if sp[0] == "knn-per-class"]
    if class_specs:
        codes = class_codes(split.labels, split.fit.shape[0])
        per_class = []
        for c in range(int(codes.max()) + 1):
            idx = EmbeddingIndex().add(np.ascontiguousarray(split.fit[codes == c]))
            kk = min(max(dict(sp[1])["k"] for sp in class_specs), idx.ntotal)
            per_class.append([idx.search(x, kk)[0].astype(np.float64) for x in sets])
        for sp in class_specs:
            p = dict(sp[1])

            def agg(d: np.ndarray, k: int = p["k"], a: str = p["aggregate"]) -> np.ndarray:
                kk = min(k, d.shape[1])
                return d[:, kk - 1] if a == "kth" else d[:, :kk].mean(1)

            out[sp] = [np.min([agg(pc[j]) for pc in per_class], axis=0) for j in range(len(sets))]
    for conditional in (False, True):
        maha = [
            sp for sp in specs if sp[0] == "mahalanobis" and dict(sp[1])["class_conditional"] == conditional
        ]
        if not maha:
            continue
        base = create_scorer("mahalanobis", shrinkage=0.0, class_conditional=conditional)
        x = split.fit.astype(np.float64)
        codes = class_codes(split.labels if conditional else None, x.shape[0])
        means = np.stack([x[codes == c].mean(0) for c in range(int(codes.max()) + 1)])
        centred = x - means[codes]
        cov = centred.T @ centred / max(x.shape[0] - means.shape[0], 1)
        target = float(np.trace(cov)) / cov.shape[0]
        vals, vecs = np.linalg.eigh(cov)
        for sp in maha:
            lam = dict(sp[1])["shrinkage"]
            shrunk = (1.0 - lam) * vals + lam * target
            floor = max(float(shrunk.max()) * 1e-10, 1e-300)
            scorer = type(base).from_state(
                {"shrinkage": lam, "class_conditional": conditional},
                {"means": means, "whiten": vecs / np.sqrt(np.maximum(shrunk, floor))},
            )
            out[sp] = [scorer.score(x_) for x_ in sets]
    fitted: dict[float, Any] = {}  # max-logit and energy share one classifier per l2
    for sp in specs:
        if sp[0] == "logit":
            p = dict(sp[1])
            if p["l2"] not in fitted:
                fitted[p["l2"]] = create_scorer("logit", l2=p["l2"]).fit(split.fit, split.labels)
            scorer = type(fitted[p["l2"]]).from_state(p | {"max_iter": 100}, fitted[p["l2"]].state_arrays())
            out[sp] = [scorer.score(x_) for x_ in sets]
    return out


def score_methods(split: Split, alpha: float) -> dict[str, dict[str, Any]]:
    """Every single method and combination on one split: metrics by method label (methods that use labels
    only where the split has them)."""
    from novelty.calibration import MultiScorerCalibrator

    names = list(split.test_out)
    raw = fast_single_scores(split, [split.cal, split.test_in, *split.test_out.values()])
    scored = {sp: Scored(v[0], v[1], dict(zip(names, v[2:], strict=True))) for sp, v in raw.items()}
    out = {spec_label(sp): _measure(v, alpha) for sp, v in scored.items()}
    for members in COMBINATIONS:
        if not all(m in scored for m in members):
            continue
        cal = MultiScorerCalibrator().fit({spec_label(m): scored[m].cal for m in members})

        def comb(
            part: list[np.ndarray], cal: MultiScorerCalibrator = cal, members: Any = members
        ) -> np.ndarray:
            return cal.combined_scores({spec_label(m): v for m, v in zip(members, part, strict=True)})

        combined = Scored(
            comb([scored[m].cal for m in members]),
            comb([scored[m].test_in for m in members]),
            {k: comb([scored[m].test_out[k] for m in members]) for k in names},
        )
        out[method_label(members)] = _measure(combined, alpha)
    return out


def label_free(method: str) -> bool:
    """Whether a method label (single or combination) uses no labels."""
    labels = {spec_label(sp) for sp in single_specs() if uses_labels(sp)}
    return not any(part in labels for part in method.split(" + "))


def imagenet_classifier(backbone: str) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet classifier ``(W, b)`` of a backbone's offline weights (the last 1000-way layer)."""
    from novelty.weights import REGISTRY, read_state_dict

    state = read_state_dict(REGISTRY[backbone].locate())
    ws = [v for v in state.values() if v.ndim == 2 and v.shape[0] == 1000]
    bs = [v for v in state.values() if v.ndim == 1 and v.shape[0] == 1000]
    if not ws or not bs:
        raise NoveltyError(f"no 1000-way classifier in the weights of {backbone}")
    return ws[-1].float().numpy(), bs[-1].float().numpy()


def score_peers(
    sc: Scenario, feats: Features, split: Split, layer: str, backbone: str, alpha: float, peers: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every peer on the split's features (ViM on the un-normalised pooled features, with the classifier)."""
    from benchmarks.ood.peers import PeerNotInstalledError, run_peer

    out: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    names = list(split.test_out)
    for name in peers:
        x_fit, sets = split.fit, [split.cal, split.test_in, *split.test_out.values()]
        classifier = None
        if name == "ptood-vim":
            if layer != "final":
                skipped[name] = "ViM needs the classifier's own feature layer (final)"
                continue
            raw_fit = feats.fit["final"]
            x_fit = raw_fit[split.fit_rows]
            sets = [
                raw_fit[split.cal_rows],
                feats.test_in["final"],
                *(feats.test_out[k]["final"] for k in names),
            ]
            classifier = imagenet_classifier(backbone)
        t0 = time.perf_counter()
        try:
            res = run_peer(name, x_fit, sets, seed=sc.seed, labels=split.labels, classifier=classifier)
        except PeerNotInstalledError as e:
            skipped[name] = str(e)
            continue
        m = _measure(
            Scored(res.scores[0], res.scores[1], dict(zip(names, res.scores[2:], strict=True))), alpha
        )
        m["seconds"] = round(time.perf_counter() - t0, 2)
        out[name] = m
    return out, skipped


# --- the protocol ---------------------------------------------------------------------------------------
Key = tuple[str, str, str]  # (backbone, layer, method)


@dataclass
class LosoRun:
    scenarios: list[str]
    labelled: dict[str, bool]
    candidates: dict[str, dict[Key, dict[str, Any]]]  # scenario → candidate → metrics
    folds: list[dict[str, Any]]
    overall: dict[str, Any]
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "scenarios": self.scenarios,
            "labelled": self.labelled,
            "folds": self.folds,
            "overall": self.overall,
            "candidates": {
                s: [{"backbone": k[0], "layer": k[1], "method": k[2], **v} for k, v in c.items()]
                for s, c in self.candidates.items()
            },
        }


def choose(
    candidates: dict[str, dict[Key, dict[str, Any]]], on: Sequence[str], *, labels: bool = False
) -> tuple[Key, float]:
    """The candidate with the highest mean of the scenarios' mean AUROC over ``on`` (first on ties), among
    the label-free ones unless ``labels``."""
    keys = [
        k for k in candidates[on[0]] if all(k in candidates[s] for s in on) and (labels or label_free(k[2]))
    ]
    means = [float(np.mean([candidates[s][k]["mean_auroc"] for s in on])) for k in keys]
    best = int(np.argmax(means))
    return keys[best], means[best]


def _best_peer(peers: dict[str, dict[str, Any]]) -> tuple[str, float] | None:
    if not peers:
        return None
    name = max(peers, key=lambda p: peers[p]["mean_auroc"])
    return name, float(peers[name]["mean_auroc"])


def run_protocol(
    scenarios: Sequence[Scenario],
    backbones: Sequence[str] = BACKBONES,
    *,
    layers: Sequence[str] = LAYERS,
    alpha: float = 0.05,
    peers: Sequence[str] | None = None,
) -> LosoRun:
    from benchmarks.ood.peers import PEERS
    from novelty.embedder import Embedder

    t_start = time.perf_counter()
    peer_names = list(PEERS) if peers is None else list(peers)
    feats: dict[tuple[str, str], Features] = {}
    for bb in backbones:
        cache = StageFeatureCache(Embedder(bb), progress=False)
        for sc in scenarios:
            feats[bb, sc.name] = scenario_features(sc, cache)
    splits: dict[tuple[str, str, str], Split] = {}
    candidates: dict[str, dict[Key, dict[str, Any]]] = {sc.name: {} for sc in scenarios}
    for sc in scenarios:
        for bb in backbones:
            for layer in layers:
                t0 = time.perf_counter()
                split = splits[sc.name, bb, layer] = make_split(sc, feats[bb, sc.name], layer)
                for method, m in score_methods(split, alpha).items():
                    candidates[sc.name][bb, layer, method] = m
                log.info("%s / %s / %s: %.1f s", sc.name, bb, layer, time.perf_counter() - t0)
    by_name = {sc.name: sc for sc in scenarios}
    peer_memo: dict[tuple[str, str, str], tuple[dict[str, dict[str, Any]], dict[str, str]]] = {}

    def peers_on(s: str, bb: str, layer: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        if (s, bb, layer) not in peer_memo:
            t0 = time.perf_counter()
            peer_memo[s, bb, layer] = score_peers(
                by_name[s], feats[bb, s], splits[s, bb, layer], layer, bb, alpha, peer_names
            )
            log.info("peers on %s / %s / %s: %.1f s", s, bb, layer, time.perf_counter() - t0)
        return peer_memo[s, bb, layer]

    names = [sc.name for sc in scenarios]
    labelled = [sc.name for sc in scenarios if sc.fit.labels is not None]
    today = TODAY if TODAY in candidates[names[0]] else None
    folds = []
    for h in names:
        rest = [s for s in names if s != h]
        key_free, train_free = choose(candidates, rest)
        rest_labelled = [s for s in labelled if s != h]
        key_lab, train_lab = (
            choose(candidates, rest_labelled, labels=True) if rest_labelled else (key_free, train_free)
        )
        is_labelled = h in labelled
        key, train_mean = (key_lab, train_lab) if is_labelled else (key_free, train_free)
        m = candidates[h][key]
        same, same_skipped = peers_on(h, key[0], key[1])
        ref_bb = backbones[0]
        ref, _ = peers_on(h, ref_bb, "final")
        fold = {
            "held_out": h,
            "labelled": is_labelled,
            "default": {"backbone": key[0], "layer": key[1], "method": key[2]},
            "train_mean_auroc": train_mean,
            "auroc": m["mean_auroc"],
            "auroc_by_set": m["auroc"],
            "false_alarm": m["false_alarm"],
            "label_free_default": {"backbone": key_free[0], "layer": key_free[1], "method": key_free[2]},
            "label_free_auroc": candidates[h][key_free]["mean_auroc"],
            "label_free_false_alarm": candidates[h][key_free]["false_alarm"],
            "today_auroc": None if today is None else candidates[h][today]["mean_auroc"],
            "best_candidate_in_hindsight": list(
                max(candidates[h].items(), key=lambda kv: kv[1]["mean_auroc"])[0]
            ),
            "peers_same_features": same,
            "peers_skipped": same_skipped,
            "peers_reference_features": {"backbone": ref_bb, "layer": "final", "peers": ref},
        }
        bests = [b for b in (_best_peer(same), _best_peer(ref)) if b is not None]
        best = max(bests, key=lambda b: b[1]) if bests else None
        fold["best_peer"] = None if best is None else {"name": best[0], "auroc": best[1]}
        fold["beats_best_peer"] = None if best is None else bool(m["mean_auroc"] > best[1])
        folds.append(fold)
        log.info("held out %s: %s → %.4f (best peer %s)", h, key, m["mean_auroc"], best)

    def ranking(on: Sequence[str], labels: bool) -> list[dict[str, Any]]:
        keys = [
            k
            for k in candidates[on[0]]
            if all(k in candidates[s] for s in on) and (labels or label_free(k[2]))
        ]
        means = {k: float(np.mean([candidates[s][k]["mean_auroc"] for s in on])) for k in keys}
        top = sorted(means.items(), key=lambda kv: -kv[1])[:25]
        return [{"backbone": k[0], "layer": k[1], "method": k[2], "mean_auroc": v} for k, v in top]

    key, mean = choose(candidates, names)
    overall: dict[str, Any] = {
        "default": {"backbone": key[0], "layer": key[1], "method": key[2]},
        "mean_auroc": mean,
        "by_scenario": {s: candidates[s][key] for s in names},
        "ranking": ranking(names, False),
    }
    if labelled:
        key_l, mean_l = choose(candidates, labelled, labels=True)
        overall["labelled_default"] = {"backbone": key_l[0], "layer": key_l[1], "method": key_l[2]}
        overall["labelled_mean_auroc"] = mean_l
        overall["labelled_by_scenario"] = {s: candidates[s][key_l] for s in labelled}
        overall["labelled_ranking"] = ranking(labelled, True)
    config = {
        "backbones": list(backbones),
        "layers": list(layers),
        "alpha": alpha,
        "peers": peer_names,
        "sizes": {
            sc.name: {
                "fit": len(sc.fit),
                "test_in": len(sc.test_in),
                **{k: len(p) for k, p in sc.test_out.items()},
            }
            for sc in scenarios
        },
        "seconds": round(time.perf_counter() - t_start, 1),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return LosoRun(
        scenarios=names,
        labelled={sc.name: sc.fit.labels is not None for sc in scenarios},
        candidates=candidates,
        folds=folds,
        overall=overall,
        config=config,
    )


# --- report ---------------------------------------------------------------------------------------------
def _key_text(d: dict[str, str]) -> str:
    return f"{d['method']} · {d['backbone'].replace('tf_efficientnet_', '')} · {d['layer']}"


def markdown(run: LosoRun) -> str:
    c = run.config
    lines = [
        "# Leave-one-scenario-out: defaults chosen without the scenario they are evaluated on",
        "",
        f"{c['date']}; backbones {', '.join(c['backbones'])}; layers {', '.join(c['layers'])}; "
        f"alpha = {c['alpha']}; {c['seconds']:.0f} s.",
        "AUROC of a scenario = mean over its novel sets. The default applied to a held-out scenario with labels "
        "is the labelled default (chosen on the other labelled scenarios, among all methods); without labels, "
        "the label-free default (chosen on all other scenarios, among the methods that use no labels). Best "
        "peer = the best of all peers on the held-out scenario itself (picked in hindsight), on the default's "
        "features or on tf_efficientnet_lite0's pooled embedding, whichever is higher.",
        "",
        "| held out | labels | default chosen on the other scenarios | its AUROC | label-free default | today's "
        "default | best peer | peer AUROC | Δ | false alarms at alpha |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for f in run.folds:
        bp = f["best_peer"]
        today = "" if f["today_auroc"] is None else f"{f['today_auroc']:.4f}"
        delta = "" if bp is None else f"{f['auroc'] - bp['auroc']:+.4f}"
        free = f"{f['label_free_auroc']:.4f}" if f["labelled"] else "(same)"
        lines.append(
            f"| {f['held_out']} | {'yes' if f['labelled'] else 'no'} | {_key_text(f['default'])} | "
            f"{f['auroc']:.4f} | {free} | {today} | {'' if bp is None else bp['name']} | "
            f"{'' if bp is None else format(bp['auroc'], '.4f')} | {delta} | {f['false_alarm']:.3f} |"
        )
    o = run.overall
    lines += [
        "",
        f"Label-free default chosen on all scenarios: **{_key_text(o['default'])}** "
        f"(mean AUROC {o['mean_auroc']:.4f}).",
    ]
    if "labelled_default" in o:
        lines.append(
            f"Labelled default chosen on all labelled scenarios: **{_key_text(o['labelled_default'])}** "
            f"(mean AUROC {o['labelled_mean_auroc']:.4f})."
        )
    lines += [
        "",
        "| scenario | novel set | AUROC | false alarms at alpha | default |",
        "|---|---|---:|---:|---|",
    ]
    for tag, key in (("by_scenario", "label-free"), ("labelled_by_scenario", "labelled")):
        for s, m in o.get(tag, {}).items():
            for ns, a in m["auroc"].items():
                lines.append(f"| {s} | {ns} | {a:.4f} | {m['false_alarm']:.3f} | {key} |")
    for tag, title in (
        ("ranking", "label-free, all scenarios"),
        ("labelled_ranking", "all methods, labelled scenarios"),
    ):
        if tag not in o:
            continue
        lines += ["", f"Top candidates ({title}):", "", "| # | candidate | mean AUROC |", "|---:|---|---:|"]
        for i, r in enumerate(o[tag][:12], 1):
            lines.append(f"| {i} | {_key_text(r)} | {r['mean_auroc']:.4f} |")
    lines += ["", "Peers on the held-out scenario (mean AUROC; default's features / lite0 pooled):", ""]
    for f in run.folds:
        same = ", ".join(f"{p} {m['mean_auroc']:.3f}" for p, m in f["peers_same_features"].items())
        ref = ", ".join(
            f"{p} {m['mean_auroc']:.3f}" for p, m in f["peers_reference_features"]["peers"].items()
        )
        lines.append(f"- {f['held_out']}: {same}  /  {ref}")
    return "\n".join(lines) + "\n"


def write(run: LosoRun, out_dir: str | Path, stem: str = "loso") -> tuple[Path, Path]:
    out = Path(out_dir)
    md, js = out / f"{stem}.md", out / f"{stem}.json"
    text = markdown(run)
    payload = json.dumps(run.to_json(), indent=1) + "\n"
    write_cache(md, lambda fh: fh.write(text.encode()), owner="benchmarks.ood")
    write_cache(js, lambda fh: fh.write(payload.encode()), owner="benchmarks.ood")
    if not (md.is_file() and js.is_file()):
        raise OSError(f"could not write the LOSO results into {out}")
    return md, js


#: Detector configurations measured on the full-size labelled scenarios (``--full``).
FULL_CONFIGS: tuple[tuple[str, ...], ...] = (
    ("knn",),
    ("knn-per-class",),
    ("mahalanobis",),
    ("logit",),
    ("knn", "logit"),
    ("knn-local", "logit"),
    ("knn", "knn-local"),
)


def run_full(names: Sequence[str] = ("fmnist-near", "fmnist-ood"), *, alpha: float = 0.05) -> dict[str, Any]:
    """The benchmark's full-size scenarios (tf_efficientnet_lite0, pooled embedding, the runner's cache)
    through ``NoveltyDetector(scorers=...).fit_embeddings(x, labels)`` as a user would fit them: AUROC per novel
    set and the false-alarm rate at ``alpha`` on the held-out in-distribution images."""
    from benchmarks.ood.runner import EmbeddingCache
    from novelty.detector import NoveltyDetector
    from novelty.embedder import Embedder
    from novelty.metrics import auroc, false_alarm_rate

    cache = EmbeddingCache(Embedder(), progress=False)
    out: dict[str, Any] = {}
    for sc in build_scenarios(list(names), size="full"):
        x = cache.get(sc.fit.pool, sc.fit.index)
        x_in = cache.get(sc.test_in.pool, sc.test_in.index)
        x_out = {k: cache.get(p.pool, p.index) for k, p in sc.test_out.items()}
        res = {}
        for scorers in FULL_CONFIGS:
            t0 = time.perf_counter()
            det = NoveltyDetector(
                scorers=scorers, head=False, calibration_fraction=sc.calibration_fraction, seed=sc.seed
            ).fit_embeddings(x, None if sc.fit.labels is None else list(sc.fit.labels))
            v_in = det.score_embeddings(x_in)
            res[" + ".join(scorers)] = {
                "auroc": {k: auroc(v_in.score, det.score_embeddings(v).score) for k, v in x_out.items()},
                "false_alarm": false_alarm_rate(v_in.p_value, alpha),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            log.info("%s / %s: %s", sc.name, scorers, res[" + ".join(scorers)])
        out[sc.name] = {"sizes": {"fit": len(sc.fit), "test_in": len(sc.test_in)}, "detectors": res}
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ood.loso",
        description="Leave-one-scenario-out: choose a default (backbone, layer, scorer) on all scenarios but "
        "one, evaluate it on the held-out one, beside the peers.",
    )
    p.add_argument("--out", default="benchmarks/results", help="folder for loso.md / loso.json")
    p.add_argument("--scenario", action="append", choices=LOSO_SCENARIOS, help="repeat to pick several")
    p.add_argument("--backbone", action="append", choices=BACKBONES, help="repeat to pick several")
    p.add_argument("--layer", action="append", choices=LAYERS, help="repeat to pick several")
    p.add_argument("--peer", action="append", help="only these peers (repeatable)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embed-only", action="store_true", help="only embed (fill the feature cache)")
    p.add_argument(
        "--full",
        action="store_true",
        help="instead: the full-size labelled scenarios through NoveltyDetector (lite0) → loso_full.json",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0.0 < args.alpha < 1.0:
        print("error: --alpha must lie in (0, 1)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    names = args.scenario or list(LOSO_SCENARIOS)
    if len(names) < 2 and not args.full:
        print("error: leave-one-out needs at least two scenarios", file=sys.stderr)
        return 2
    backbones = args.backbone or list(BACKBONES)
    try:
        scenarios = loso_scenarios(names, seed=args.seed)
        if args.embed_only:
            print(embed_all(scenarios, backbones))
            return 0
        if args.full:
            labelled = ("fmnist-near", "fmnist-ood", "mnist-near", "animals-near")
            full = run_full([n for n in (args.scenario or labelled[:2]) if n in labelled])
            text = json.dumps(full, indent=1) + "\n"
            path = Path(args.out) / "loso_full.json"
            write_cache(path, lambda fh: fh.write(text.encode()), owner="benchmarks.ood")
            print(text)
            return 0
        run = run_protocol(
            scenarios, backbones, layers=args.layer or LAYERS, alpha=args.alpha, peers=args.peer
        )
    except DatasetNotInstalledError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except NoveltyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md, js = write(run, args.out)
    print(markdown(run))
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
