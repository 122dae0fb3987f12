"""Matplotlib figures of a :class:`~benchmarks.ood.runner.ScenarioResult`: ROC curves and score histograms.

Used by the notebooks in ``notebooks/``; needs matplotlib (``pip install 'novelty[bench]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.errors import InvalidInputError
from novelty.metrics import roc_curve

if TYPE_CHECKING:
    from benchmarks.ood.runner import ScenarioResult

__all__ = ["figure_is_drawn", "plot_histograms", "plot_roc"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'novelty[bench]'") from e
    return plt


def plot_roc(
    result: ScenarioResult, methods: Sequence[str] | None = None, *, ncols: int = 3, panel_size: float = 3.6
) -> Any:
    """One panel per novel set with the ROC curve of each method (default: all); returns the figure."""
    plt = _pyplot()
    sets = result.novel_sets
    names = list(methods) if methods is not None else list(result.methods)
    unknown = [m for m in names if m not in result.methods]
    if unknown:
        raise InvalidInputError(f"no results for {unknown}; have {list(result.methods)}")
    ncols = min(ncols, len(sets))
    nrows = -(-len(sets) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows), squeeze=False)
    for ax, s in zip(axes.ravel(), sets, strict=False):
        for name in names:
            m = result.methods[name]
            fpr, tpr = roc_curve(m.scores_in, m.scores_out[s])
            style = "-" if m.kind == "novelty" else ":"
            ax.plot(
                fpr,
                tpr,
                style,
                lw=1.6 if m.kind == "novelty" else 1.2,
                label=f"{name} {m.metrics[s]['auroc']:.3f}",
            )
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.8, zorder=0)
        ax.set(
            title=f"{result.scenario}: {s}",
            xlabel="false-positive rate (in-dist.)",
            ylabel="true-positive rate (novel)",
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.legend(fontsize=7, loc="lower right", title="AUROC", title_fontsize=7)
    for ax in axes.ravel()[len(sets) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_histograms(
    result: ScenarioResult,
    method: str = "combined",
    *,
    ncols: int = 3,
    bins: int = 40,
    panel_size: float = 3.6,
) -> Any:
    """One panel per novel set: the score histogram of held-out in-distribution vs novel images."""
    plt = _pyplot()
    if method not in result.methods:
        raise InvalidInputError(f"no results for {method!r}; have {list(result.methods)}")
    m = result.methods[method]
    sets = result.novel_sets
    ncols = min(ncols, len(sets))
    nrows = -(-len(sets) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows * 0.8), squeeze=False
    )
    for ax, s in zip(axes.ravel(), sets, strict=False):
        both = np.concatenate([m.scores_in, m.scores_out[s]])
        edges = np.histogram_bin_edges(both, bins=bins)
        ax.hist(
            m.scores_in, bins=edges, alpha=0.6, density=True, label=f"in-distribution ({m.scores_in.size})"
        )
        ax.hist(m.scores_out[s], bins=edges, alpha=0.6, density=True, label=f"{s} ({m.scores_out[s].size})")
        ax.set(title=f"{method}: {s}", xlabel="score (higher = more novel)", ylabel="density")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(sets) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def figure_is_drawn(fig: Any) -> bool:
    """True when every visible panel of ``fig`` holds data (lines with points or bars of non-zero height)."""
    axes = [ax for ax in fig.axes if ax.get_visible()]
    if not axes:
        return False
    for ax in axes:
        has_line = any(len(line.get_xdata()) > 1 for line in ax.lines)
        has_bar = any(p.get_height() > 0 for p in ax.patches if hasattr(p, "get_height"))
        if not (has_line or has_bar):
            return False
    return True
