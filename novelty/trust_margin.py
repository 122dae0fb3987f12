"""The class margin of :mod:`novelty.trust`: how much nearer an image lies to its predicted class than to any
other, read from a search of the training index."""

from __future__ import annotations

import numpy as np

__all__ = ["class_margin"]


def class_margin(
    distances: np.ndarray, positions: np.ndarray, train_labels: np.ndarray, predicted: np.ndarray
) -> np.ndarray:
    """The *class margin* of each row (the trust score of Jiang et al. 2018), from a search of the training
    index: the distance to the nearest training image of another class over the distance to the nearest one of
    the class the head predicts (``predicted``, positions in the head's classes; ``train_labels`` likewise for
    the indexed images). ``inf`` when no other class is among the images searched, ``0`` when the predicted
    class is not. Low: the image lies as near another class as its own, where a near-duplicate of an unseen
    class (a shirt beside T-shirts, an ankle boot beside sneakers) sits."""
    d, pos = np.asarray(distances, dtype=np.float64), np.asarray(positions)
    labels = np.asarray(train_labels, dtype=np.int64)
    lab = np.where(pos >= 0, labels[np.clip(pos, 0, None)], -2)
    pred = np.asarray(predicted, dtype=np.int64)[:, None]
    d_same = np.where((pos >= 0) & (lab == pred), d, np.inf).min(axis=1, initial=np.inf)
    d_other = np.where((pos >= 0) & (lab != pred), d, np.inf).min(axis=1, initial=np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = d_other / np.maximum(d_same, 1e-12)
    out[~np.isfinite(d_same)] = 0.0
    return out
