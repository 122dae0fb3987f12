"""A LightningDataModule over in-memory embedding arrays with a seeded validation split."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class EmbeddingDataModule(pl.LightningDataModule):
    """Embeddings (and optional integer labels) split into train / validation parts by ``seed``.

    ``groups``: items of one group stay on one side of the split (near-duplicate frames).
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        val_fraction: float = 0.15,
        batch_size: int = 128,
        seed: int = 0,
        groups: np.ndarray | None = None,
    ):
        super().__init__()
        x = torch.as_tensor(np.ascontiguousarray(embeddings, dtype=np.float32))
        y = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.int64))
        n = x.shape[0]
        rng = np.random.default_rng(seed)
        if groups is not None:
            g = np.asarray(groups)
            uniq = rng.permutation(np.unique(g))
            n_val_groups = max(1, int(round(val_fraction * uniq.shape[0])))
            is_val = np.isin(g, uniq[:n_val_groups])
        else:
            is_val = np.zeros(n, dtype=bool)
            is_val[rng.permutation(n)[: max(1, int(round(val_fraction * n)))]] = True
        self.train_idx = np.flatnonzero(~is_val)
        self.val_idx = np.flatnonzero(is_val)
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.seed = seed

    def _dataset(self, idx: np.ndarray) -> TensorDataset:
        t = torch.as_tensor(idx)
        return TensorDataset(self.x[t]) if self.y is None else TensorDataset(self.x[t], self.y[t])

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self._dataset(self.train_idx), batch_size=self.batch_size, shuffle=True, generator=gen
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset(self.val_idx), batch_size=1024)

    def val_tensors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = torch.as_tensor(self.val_idx)
        return self.x[t], None if self.y is None else self.y[t]
