"""LightningModules: how the plain modules of ``novelty.models`` are trained (losses, optimisers, logging)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from novelty.models import ClassifierHead, EmbeddingAutoencoder


class AutoencoderSystem(pl.LightningModule):
    """Trains an :class:`EmbeddingAutoencoder` to reconstruct standardised embeddings (MSE)."""

    def __init__(self, model: EmbeddingAutoencoder, lr: float = 1e-3, weight_decay: float = 1e-4):
        super().__init__()
        self.model: EmbeddingAutoencoder = model
        self.lr, self.weight_decay = lr, weight_decay

    def _loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        return self.model.reconstruction_error(batch[0]).mean()

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, on_epoch=True, on_step=False, prog_bar=False)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), on_epoch=True, prog_bar=False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class ClassifierSystem(pl.LightningModule):
    """Trains a :class:`ClassifierHead` with cross-entropy; logs loss and accuracy."""

    def __init__(self, model: ClassifierHead, lr: float = 1e-3, weight_decay: float = 1e-4):
        super().__init__()
        self.model: ClassifierHead = model
        self.lr, self.weight_decay = lr, weight_decay

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
