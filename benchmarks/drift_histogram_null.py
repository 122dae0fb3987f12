"""The histogram test's false-alarm rate on synthetic i.i.d. data with the sizes of the drift benchmark: 500
reference embeddings, 16 clusters, 400 null windows of n = 10, 30, 100 (Gaussian, three stretched axes).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.drift_histogram_null
"""

from __future__ import annotations

import numpy as np

from novelty.drift.histogram import ReferenceClusters, histogram_test


def main(windows: int = 400, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pop = rng.normal(size=(200_000, 64)).astype(np.float32)
    pop[:, :3] *= 4  # some structure for k-means to find
    clusters = ReferenceClusters(16, seed=0).fit(pop[:500])
    for n in (10, 30, 100):
        p = np.array(
            [
                histogram_test(
                    clusters,
                    pop[rng.integers(500, len(pop), size=n)],
                    n_permutations=500,
                    stop_after=10,
                    n_bootstrap=0,
                    seed=w,
                ).p_value
                for w in range(windows)
            ]
        )
        se = (0.05 * 0.95 / windows) ** 0.5
        print(
            f"n = {n:4d}: fires {np.mean(p < 0.05):.3f} of {windows} windows at 0.05 (one SE {se:.3f}); mean p {p.mean():.3f}"
        )


if __name__ == "__main__":
    main()
