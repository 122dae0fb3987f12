"""Shared by the drift tests (tests/drift/): Gaussian blobs, the KS check of uniformity, conformal windows."""

from __future__ import annotations

import numpy as np
from scipy import stats

from novelty.calibration import conformal_p_values

N_NULL = 200  # null windows per test


def blobs(rng: np.random.Generator, n: int, d: int = 8, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, :2] += shift
    return x


def uniform_ks(p: np.ndarray) -> float:
    return float(stats.kstest(p, "uniform").pvalue)


def conformal_window(rng: np.random.Generator, n_cal: int, m: int, shift: float = 0.0) -> np.ndarray:
    cal = rng.normal(size=n_cal)
    return conformal_p_values(cal, rng.normal(size=m) + shift)
