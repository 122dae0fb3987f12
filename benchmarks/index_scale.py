"""Index kinds at a million vectors: build time, memory, query throughput, recall@10 and kNN-score error.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.index_scale --n 1000000 --out benchmarks/results

**Data.** Synthetic vectors with the spectrum of real embeddings: every cached real embedding of the default
backbone (``$NOVELTY_CACHE/embeddings/<backbone>-<fingerprint>/*.npz``, written by ``make bench-ood``: Fashion-
MNIST, MNIST, animals, street scenes, textile) is L2-normalised, clustered by k-means (``--clusters``), and new
vectors are drawn as ``centroid + U·diag(√λ)·z``, where ``λ, U`` are the eigenvalues and eigenvectors of the
pooled within-cluster covariance: the mixture's total covariance is the real set's (between-cluster plus
within-cluster), and the cluster sizes follow the real ones. The spectra are printed side by side. Within a
cluster the draw is Gaussian, without the tighter local structure (near-duplicates) of real images, which makes
approximate search harder than on real data, not easier. The 1,000 queries are drawn from the same mixture,
apart from the indexed vectors.

**Measures.** Exact flat search is the reference, in the same run: recall@10 = the share of the exact 10
neighbours found; kNN-score error = ``|d_k − d_k*| / d_k*`` for the 10th-neighbour distance (the ``knn``
scorer's score), median and 99th percentile; query throughput = 1,000 queries / median of 3 timed runs;
memory = the FAISS index's serialised size (the vector store used for exact re-ranking is memory-mapped from
disk and listed apart).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from novelty.index import EmbeddingIndex

log = logging.getLogger("benchmarks.index_scale")


def real_embeddings(cache: Path | None) -> np.ndarray:
    from benchmarks.ood.runner import EmbeddingCache
    from novelty.embedder import Embedder

    emb = Embedder()
    root = EmbeddingCache(emb, cache).root
    parts = []
    for f in sorted(root.glob("*.npz")):
        with np.load(f) as z:
            parts.append(np.asarray(z["embeddings"], dtype=np.float32))
    if not parts or sum(p.shape[0] for p in parts) < 5000:
        raise SystemExit(f"fewer than 5000 cached real embeddings under {root}: run `make bench-ood` first")
    x = np.concatenate(parts)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Mixture:
    """Gaussian mixture with the real set's cluster centres, sizes and pooled within-cluster covariance."""

    def __init__(self, real: np.ndarray, clusters: int, seed: int):
        d = real.shape[1]
        km = faiss.Kmeans(d, clusters, niter=20, seed=seed, verbose=False)
        km.train(real)
        _, a = km.index.search(real, 1)
        a = a[:, 0]
        assert km.centroids is not None
        self.centroids = km.centroids.astype(np.float64)
        self.weights = np.bincount(a, minlength=clusters) / a.shape[0]
        resid = real.astype(np.float64) - self.centroids[a]
        cov = resid.T @ resid / max(1, real.shape[0] - clusters)
        lam, U = np.linalg.eigh(cov)
        self.factor = (U * np.sqrt(np.clip(lam, 0, None))).astype(np.float32)  # x = c + factor @ z
        self.d = d

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        c = rng.choice(self.weights.shape[0], size=n, p=self.weights)
        z = rng.standard_normal((n, self.d), dtype=np.float32)
        return (self.centroids[c].astype(np.float32) + z @ self.factor.T).astype(np.float32)


class Perturbed:
    """Real embeddings, each drawn again with noise of the spread between real nearest neighbours: the
    embedding-space analogue of augmenting the real images (local structure kept, ~n/real copies of each)."""

    def __init__(self, real: np.ndarray, seed: int):
        idx = faiss.IndexFlatL2(real.shape[1])
        idx.add(real)
        _, nn = idx.search(real, 2)
        diff = (real - real[nn[:, 1]]).astype(np.float64) / np.sqrt(2.0)
        lam, U = np.linalg.eigh(diff.T @ diff / diff.shape[0])
        self.factor = (U * np.sqrt(np.clip(lam, 0, None))).astype(np.float32)
        self.real, self.d = real, real.shape[1]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        j = rng.integers(0, self.real.shape[0], n)
        z = rng.standard_normal((n, self.d), dtype=np.float32)
        return (self.real[j] + z @ self.factor.T).astype(np.float32)


def spectrum(x: np.ndarray, top: int = 10) -> np.ndarray:
    xc = x - x.mean(axis=0)
    return np.linalg.svd(xc[: min(20000, x.shape[0])], compute_uv=False)[:top] ** 2 / min(20000, x.shape[0])


def make_data(path: Path, n: int, mix: Mixture | Perturbed, seed: int, chunk: int = 50_000) -> None:
    if path.exists():
        arr = np.load(path, mmap_mode="r")
        if arr.shape == (n, mix.d):
            log.info("reusing %s", path)
            return
    tmp = path.with_suffix(".tmp.npy")
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, mix.d))
    rng = np.random.default_rng(seed)
    for s in range(0, n, chunk):
        mm[s : s + chunk] = mix.sample(min(chunk, n - s), rng)
        log.info("generated %d/%d", min(n, s + chunk), n)
    mm.flush()
    del mm
    os.replace(tmp, path)


def timed_search(index: EmbeddingIndex, q: np.ndarray, k: int, repeats: int = 3) -> tuple[float, tuple]:
    times, res = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        res = index.search(q, k)
        times.append(time.perf_counter() - t)
    assert res is not None
    return float(np.median(times)), res


def measure(
    name: str, index: EmbeddingIndex, build_s: float, q: np.ndarray, exact: tuple, k: int
) -> dict[str, Any]:
    secs, (D, I) = timed_search(index, q, k)
    De, Ie = exact
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(I, Ie, strict=True)]))
    err = np.abs(D[:, -1].astype(np.float64) - De[:, -1]) / De[:, -1]
    # near-ties: a neighbour found within 1 % of the true 10th distance is as good as the one it displaced
    recall_1pct = float(np.mean(De[:, -1:] * 1.01 >= D))
    store, mapped = index.store_bytes()
    row = {
        "name": name,
        "plan": None if index.plan_ is None else index.plan_.to_json(),
        "build_s": round(build_s, 1),
        "index_mb": round(index.memory_bytes() / 2**20, 1),
        "store_mb": round(store / 2**20, 1),
        "store_mapped": mapped,
        "qps": round(q.shape[0] / secs, 1),
        "recall@10": round(recall, 4),
        "recall@10_within_1pct": round(recall_1pct, 4),
        "score_err_median": float(np.median(err)),
        "score_err_p99": float(np.quantile(err, 0.99)),
    }
    log.info("%s", row)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--clusters", type=int, default=256)
    p.add_argument(
        "--data",
        choices=("mixture", "perturbed"),
        default="mixture",
        help="mixture: Gaussian clusters with the real spectrum (hard: no local structure); perturbed: real "
        "embeddings plus nearest-neighbour noise (augmentation-like)",
    )
    p.add_argument("--sweep", default="full", choices=("full", "short"))
    p.add_argument("--kinds", default="ivf-flat,ivf-pq,opq,hnsw")
    p.add_argument("--hnsw-max", type=int, default=1_000_000, help="build HNSW on at most this many vectors")
    p.add_argument(
        "--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "novelty-index-scale"
    )
    p.add_argument("--cache", type=Path, default=None, help="embedding cache (default $NOVELTY_CACHE)")
    p.add_argument("--out", type=Path, default=None, help="folder for index_scale.json")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    real = real_embeddings(args.cache)
    mix: Mixture | Perturbed = (
        Mixture(real, args.clusters, args.seed) if args.data == "mixture" else Perturbed(real, args.seed)
    )
    data = args.work / f"vectors-{args.data}-{args.n}-{args.seed}.npy"
    make_data(data, args.n, mix, args.seed)
    q = mix.sample(args.queries, np.random.default_rng(args.seed + 1))
    x = np.load(data, mmap_mode="r")
    spec_real, spec_syn = (
        spectrum(real),
        spectrum(np.asarray(x[:20000]) / np.linalg.norm(x[:20000], axis=1, keepdims=True)),
    )
    log.info("spectrum real %s", np.round(spec_real, 4))
    log.info("spectrum synthetic %s", np.round(spec_syn, 4))
    results: dict[str, Any] = {
        "n": args.n,
        "data": args.data,
        "dim": int(x.shape[1]),
        "queries": args.queries,
        "k": args.k,
        "threads": faiss.omp_get_max_threads(),
        "real_rows": int(real.shape[0]),
        "spectrum_real_top10": spec_real.tolist(),
        "spectrum_synthetic_top10": spec_syn.tolist(),
        "rows": [],
    }

    t = time.perf_counter()
    flat = EmbeddingIndex.build(data, kind="flat")
    flat_build = time.perf_counter() - t
    _, exact = timed_search(flat, q, args.k, repeats=1)
    results["rows"].append(measure("flat (exact)", flat, flat_build, q, exact, args.k))
    flat_qps = results["rows"][-1]["qps"]
    del flat

    for kind in [k for k in args.kinds.split(",") if k]:
        n_kind = min(args.n, args.hnsw_max) if kind == "hnsw" else args.n
        ref_row: dict[str, Any] = {}
        if n_kind != args.n:
            log.info("hnsw on the first %d vectors only (--hnsw-max)", n_kind)
            ref = EmbeddingIndex.build(np.asarray(x[:n_kind]), kind="flat")
            _, exact_k = timed_search(ref, q, args.k, repeats=1)
            ref_row = measure(f"flat (exact) on {n_kind}", ref, 0.0, q, exact_k, args.k)
            ref_row["n"] = n_kind
            results["rows"].append(ref_row)
            del ref
        else:
            exact_k = exact
        store = args.work / f"store-{kind}.npy"
        t = time.perf_counter()
        idx = EmbeddingIndex.build(
            data if n_kind == args.n else np.asarray(x[:n_kind]), kind=kind, store_path=store
        )
        build_s = time.perf_counter() - t
        if kind in ("ivf-flat", "ivf-pq", "opq"):
            probes = (16, 32, 64) if args.sweep == "full" else (16,)
            refines = (
                (1,) if kind == "ivf-flat" else (10, 20, 40, 80) if args.sweep == "full" else (10, 20, 80)
            )
            sweeps = [{"nprobe": npb, "refine": r} for npb in probes for r in refines]
        elif kind == "hnsw":
            sweeps = [{"ef_search": ef} for ef in (32, 64, 128, 256)]
        else:
            sweeps = [{}]
        for s in sweeps:
            idx.set_search(**s)
            row = measure(f"{kind} {s}", idx, build_s, q, exact_k, args.k)
            row["n"] = n_kind
            base = flat_qps if n_kind == args.n else ref_row["qps"]
            row["speedup_vs_flat"] = round(row["qps"] / base, 1)  # against exact search on the same vectors
            results["rows"].append(row)
        del idx
        store.unlink(missing_ok=True)

    results["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(results, indent=1)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"index_scale_{args.data}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
