"""Do the clusters of "what is missing" recover the conditions? A mixed window of street frames — clean,
tunnel, ice, fog and snow (severity 1, the held-out test frames of the street scenario) — is scored by the
street detector; its novel images are clustered (:func:`novelty.drift.what_is_missing`) and the clusters are
compared with the true conditions by the adjusted Rand index (scikit-learn).

    python -m benchmarks.drift_clusters            # → benchmarks/results/drift_clusters.{json,md}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

CONDITIONS = ("clean", "tunnel", "ice", "fog", "snow")


def run(seed: int = 0, severity: int = 1) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    from benchmarks.ood.runner import EmbeddingCache
    from benchmarks.ood.scenarios import build_scenarios
    from novelty.detector import NoveltyDetector
    from novelty.drift import DriftReference, what_is_missing
    from novelty.embedder import Embedder

    t0 = time.perf_counter()
    cache = EmbeddingCache(Embedder(), progress=False)
    s = build_scenarios(["street"], size="full", seed=seed)[0]
    det = NoveltyDetector(calibration_fraction=s.calibration_fraction, seed=seed).fit_embeddings(
        cache.get(s.fit.pool, s.fit.index), groups=list(s.fit.groups)
    )
    parts = [cache.get(s.test_in.pool, s.test_in.index)] + [
        cache.get(s.test_out[f"{c}-s{severity}"].pool, s.test_out[f"{c}-s{severity}"].index)
        for c in CONDITIONS[1:]
    ]
    x = np.concatenate(parts)
    truth = np.repeat(np.arange(len(CONDITIONS)), [p.shape[0] for p in parts])
    v = det.score_embeddings(x)
    novel = v.is_novel
    ref = DriftReference.from_detector(det)
    out: dict[str, Any] = {
        "window": {c: int((truth == j).sum()) for j, c in enumerate(CONDITIONS)},
        "flagged": {c: int(novel[truth == j].sum()) for j, c in enumerate(CONDITIONS)},
        "methods": {},
    }
    for name, kw in (
        ("k-means, k by silhouette", {"method": "kmeans"}),
        ("k-means, k = 4", {"method": "kmeans", "n_clusters": 4}),
        ("HDBSCAN", {"method": "hdbscan"}),
    ):
        clusters = what_is_missing(ref, x, novel=novel, seed=seed, **kw)  # type: ignore[arg-type]
        labels = np.full(x.shape[0], -2)
        for c in clusters:
            labels[c.members] = c.cluster
        m = novel
        ari_novel = float(adjusted_rand_score(truth[m], labels[m]))
        shifted = m & (truth > 0)
        ari_shifted = float(adjusted_rand_score(truth[shifted], labels[shifted]))
        comp = []
        for c in clusters:
            cnt = Counter(CONDITIONS[t] for t in truth[c.members])
            top, k = cnt.most_common(1)[0]
            comp.append(
                {
                    "cluster": c.cluster,
                    "size": c.size,
                    "majority": top,
                    "purity": k / c.size,
                    "counts": dict(cnt),
                }
            )
        out["methods"][name] = {
            "n_clusters": len(clusters),
            "ari_flagged": ari_novel,
            "ari_flagged_conditions_only": ari_shifted,
            "clusters": comp,
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["severity"] = severity
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "| clustering | clusters | ARI (all flagged) | ARI (flagged shifted frames) | clusters: majority condition (purity, size) |",
        "|---|---|---|---|---|",
    ]
    for name, m in res["methods"].items():
        comp = ", ".join(f"{c['majority']} ({c['purity']:.0%}, {c['size']})" for c in m["clusters"])
        lines.append(
            f"| {name} | {m['n_clusters']} | {m['ari_flagged']:.3f} | {m['ari_flagged_conditions_only']:.3f} | {comp} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--severity", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    from novelty.fileio import atomic_write_text

    res = run(args.seed, args.severity)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "drift_clusters.json", json.dumps(res, indent=1))
    atomic_write_text(out / "drift_clusters.md", markdown(res))
    print(json.dumps({k: v for k, v in res.items() if k != "methods"}))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
