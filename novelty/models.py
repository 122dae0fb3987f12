"""Plain ``nn.Module``s trained on embeddings. No Lightning here: inference never imports it.

The LightningModules that train these live in ``training/``. Each module carries the arguments needed to
rebuild it (``config()``), so a safetensors state dict plus that JSON is a complete checkpoint.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

__all__ = ["ClassifierHead", "EmbeddingAutoencoder"]


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class EmbeddingAutoencoder(nn.Module):
    """An MLP autoencoder over embeddings: ``dim → hidden… → bottleneck → …hidden → dim``.

    ``mean`` and ``scale`` are buffers set from the training embeddings: inputs are centred and divided by
    ``scale`` (one common value for a plain MSE, or one per dimension for a standardised error).
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self, dim: int, hidden: tuple[int, ...] = (256,), bottleneck: int = 32, dropout: float = 0.0
    ):
        super().__init__()
        self.dim: int = dim
        self.hidden, self.bottleneck, self.dropout = tuple(hidden), bottleneck, dropout
        self.encoder = _mlp([dim, *hidden, bottleneck], dropout)
        self.decoder = _mlp([bottleneck, *reversed(hidden), dim], dropout)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "hidden": list(self.hidden),
            "bottleneck": self.bottleneck,
            "dropout": self.dropout,
        }

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of the *standardised* input."""
        return self.decoder(self.encoder(self.standardise(x)))

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared error per row in standardised units: ``(n,)``, higher = more novel."""
        z = self.standardise(x)
        return ((self.decoder(self.encoder(z)) - z) ** 2).mean(dim=1)


class ClassifierHead(nn.Module):
    """A linear (``hidden=0``) or one-hidden-layer classifier over embeddings, returning logits."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 0, dropout: float = 0.1):
        super().__init__()
        self.dim: int = dim
        self.n_classes, self.hidden, self.dropout = n_classes, hidden, dropout
        sizes = [dim, hidden, n_classes] if hidden else [dim, n_classes]
        self.net = _mlp(sizes, dropout)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "n_classes": self.n_classes, "hidden": self.hidden, "dropout": self.dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
