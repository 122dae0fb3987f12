"""Which layers of the backbone an embedding is made of: the pooled output alone (``"final"``, the default), or
the pooled output concatenated with globally averaged inner stages (``"final+s16"``).

    Embedder(layers="final+s16")         # or layers=("final", "s16"); NoveltyDetector(layers=...), fit --layers

A stage is named by its stride: ``"s16"`` is the last stage of the backbone whose output is 1/16 of the input
(``timm``'s ``feature_info`` reduction; for ``tf_efficientnet_lite0`` the 112-channel output of ``blocks[4]``).
Each part is averaged over space, L2-normalised, and the parts are concatenated with equal weight and
normalised again, so every part counts the same however many channels it has. The inner stages keep textures
the pooled output averages away: on the windshield frames, faint snow that the pooled output puts among clean
wet frames stands apart in ``final+s16`` space, and the trust decision stops vouching for it (measured in
``benchmarks/RESULTS.md``, "Trust").

The layers are part of what an embedding means: they are recorded with a detector and folded into the
embedder's :attr:`~novelty.embedder.Embedder.fingerprint`, so caches and artifacts of different layers never
mix. ``("final",)`` leaves the backbone untouched: its embeddings and fingerprint are those of earlier releases.
The names and checks live here, free of torch; the module that runs the stages is
:class:`novelty.embedder.LayeredBackbone`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from novelty.errors import InvalidInputError

__all__ = ["DEFAULT_LAYERS", "check_embedding_layers", "layers_fingerprint", "layers_name"]

DEFAULT_LAYERS: tuple[str, ...] = ("final",)
_STAGE = re.compile(r"s([1-9][0-9]*)")


def check_embedding_layers(layers: Any) -> tuple[str, ...]:
    """``layers`` as a tuple of names: ``"final"`` and stages ``"s<stride>"``, each at most once, e.g.
    ``("final", "s16")``; a string joins them with ``+`` (``"final+s16"``)."""
    if isinstance(layers, str):
        parts: Sequence[Any] = layers.split("+")
    elif isinstance(layers, (tuple, list)):
        parts = layers
    else:
        raise InvalidInputError(
            f"layers must be 'final', 'final+s16' or a list of such names, got {layers!r}"
        )
    out = tuple(str(p).strip() if isinstance(p, str) else p for p in parts)
    if not out:
        raise InvalidInputError("layers must name at least one layer, e.g. 'final'")
    for p in out:
        if not isinstance(p, str) or not (p == "final" or _STAGE.fullmatch(p)):
            raise InvalidInputError(
                f"unknown embedding layer {p!r}: use 'final' (the pooled output) or a stage by its stride, "
                "such as 's16'"
            )
    if len(set(out)) != len(out):
        raise InvalidInputError(f"each embedding layer may appear once, got {'+'.join(out)}")
    return out


def layers_name(layers: Sequence[str]) -> str:
    return "+".join(layers)


def layers_fingerprint(weights_fingerprint: str, layers: Sequence[str]) -> str:
    """The fingerprint of embeddings made of ``layers`` by weights with ``weights_fingerprint``: the weights'
    own for the default layers, else a sha256 of both."""
    if tuple(layers) == DEFAULT_LAYERS:
        return weights_fingerprint
    return hashlib.sha256(f"{weights_fingerprint}|layers={layers_name(layers)}".encode()).hexdigest()
