"""novelty — find the production images a vision model was never trained for.

Scores: **higher = more novel**, everywhere. ``p_value`` is a split-conformal p-value against held-out
in-distribution images; an image is flagged when ``p_value < alpha``.
"""

from __future__ import annotations

from novelty.calibration import ConformalCalibrator, MultiScorerCalibrator, conformal_p_values
from novelty.detector import BatchVerdicts, Neighbor, NoveltyDetector, Verdict, load
from novelty.embedder import Embedder
from novelty.head import ConditionHead
from novelty.images import load_image
from novelty.index import EmbeddingIndex
from novelty.scorers import AutoencoderScorer, KNNScorer, Scorer, create_scorer, register_scorer
from novelty.version import __version__
from novelty.weights import create_backbone, list_offline_backbones

__all__ = [
    "AutoencoderScorer",
    "BatchVerdicts",
    "ConditionHead",
    "ConformalCalibrator",
    "Embedder",
    "EmbeddingIndex",
    "KNNScorer",
    "MultiScorerCalibrator",
    "Neighbor",
    "NoveltyDetector",
    "Scorer",
    "Verdict",
    "__version__",
    "conformal_p_values",
    "create_backbone",
    "create_scorer",
    "list_offline_backbones",
    "load",
    "load_image",
    "register_scorer",
]


# The HTTP client (novelty serve); loaded on first use so that `import novelty` stays light.
def __getattr__(name: str) -> object:
    if name == "Client":
        from novelty.serve.client import Client  # lazy: keeps http.client out of `import novelty`

        return Client
    raise AttributeError(f"module 'novelty' has no attribute {name!r}")
