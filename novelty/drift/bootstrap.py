"""The percentile bootstrap interval that the drift tests put around their effect sizes.

    lo, hi = bootstrap_interval(statistic, sizes=(n, m), n_boot=200, confidence=0.95, rng=rng)

A replicate resamples every sample with replacement, as many draws as the sample holds, the samples
independently of each other, and computes the statistic of the resampled samples; the interval is the
``(1 − confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the replicates (numpy's default, linear
interpolation). The samples come in one of two forms, each drawn its own way:

- ``sizes``: sample ``s`` holds ``sizes[s]`` images. For each replicate, sample after sample, the positions of
  ``sizes[s]`` draws come from ``rng.integers``; ``statistic`` gets, for each sample, how often each image was
  drawn (``(b, sizes[s])`` counts), ``block`` replicates at a time.
- ``class_counts``: sample ``s`` is a histogram over classes. One multinomial draw per sample gives all
  replicates (its total count, from its shares), sample after sample; ``statistic`` gets the ``(n_boot, k)``
  class counts of each sample at once. Resampling the images of a histogram draws the same law, cheaper when
  there are few classes.

The order of the draws is part of the result: with the same ``rng`` state the same replicates come out.
Paired and stratified resampling of two models on the same images is another mechanism
(:func:`novelty.flywheel.comparison.paired.bootstrap_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from novelty.errors import InvalidInputError

__all__ = ["bootstrap_interval", "percentile_interval"]

#: replicates handed to the statistic at once when the samples are given by size
BLOCK = 128


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of ``replicates`` by their quantiles; NaNs when there are none."""
    if replicates.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2
    return float(np.quantile(replicates, tail)), float(np.quantile(replicates, 1 - tail))


def bootstrap_interval(
    statistic: Callable[..., np.ndarray],
    *,
    n_boot: int,
    confidence: float,
    rng: np.random.Generator,
    sizes: Sequence[int] | None = None,
    class_counts: Sequence[np.ndarray] | None = None,
    block: int = BLOCK,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (see the module docstring); ``(nan, nan)`` and no draw
    at all when ``n_boot`` is 0. ``statistic(*counts)`` returns one value per replicate."""
    if (sizes is None) == (class_counts is None):
        raise InvalidInputError("give the samples either as sizes or as class_counts, not both or neither")
    parts: list[np.ndarray] = []
    if class_counts is not None:
        if n_boot:
            draws = []
            for c in class_counts:
                total = c.sum()
                draws.append(rng.multinomial(total, c / total, size=n_boot))
            parts.append(np.asarray(statistic(*draws), dtype=np.float64))
    elif sizes is not None:
        for start in range(0, n_boot, block):
            b = min(block, n_boot - start)
            counts = [np.empty((b, n), dtype=np.int64) for n in sizes]
            for j in range(b):
                for c, n in zip(counts, sizes, strict=True):
                    c[j] = np.bincount(rng.integers(0, n, n), minlength=n)
            parts.append(np.asarray(statistic(*counts), dtype=np.float64))
    return percentile_interval(np.concatenate(parts) if parts else np.empty(0), confidence)
