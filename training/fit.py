"""One-call training of the embedding models: seeded, early-stopped on a validation split, CSV-logged.

``accelerator="auto"`` (default) trains on a GPU when one is present, else on the CPU; ``"cpu"`` forces it.
Returns the trained plain ``nn.Module`` in eval mode (on the CPU) plus its training history, so callers never
hold Lightning objects.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import CSVLogger

from novelty.models import ClassifierHead, EmbeddingAutoencoder

from .data import EmbeddingDataModule
from .systems import AutoencoderSystem, ClassifierSystem

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    max_epochs: int = 200
    patience: int = 15
    min_delta: float = 1e-4  # smaller improvements of the validation loss do not count as progress
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 128
    val_fraction: float = 0.15
    seed: int = 0
    accelerator: str = "auto"  # a GPU when one is present, else the CPU
    log_dir: str | None = None  # CSV logs go here (a temporary directory when None)


@dataclass
class TrainResult:
    model: torch.nn.Module
    epochs: int
    best_val_loss: float
    seconds: float
    val_idx: np.ndarray  # positions of the validation items in the training arrays
    history: list[dict[str, Any]] = field(default_factory=list)
    log_dir: str | None = None


def _fit(system: pl.LightningModule, dm: EmbeddingDataModule, cfg: TrainConfig, name: str) -> TrainResult:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no "GPU available" banners per fit
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    log_root = cfg.log_dir or tempfile.mkdtemp(prefix="novelty-train-")
    logger = CSVLogger(log_root, name=name)
    stopper = EarlyStopping(monitor="val_loss", patience=cfg.patience, mode="min", min_delta=cfg.min_delta)
    trainer = pl.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=1,
        logger=logger,
        callbacks=[stopper],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        log_every_n_steps=1,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # Lightning's advice about dataloader workers does not apply to in-memory tensors
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*number of training batches.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        trainer.fit(system, datamodule=dm)
    seconds = time.perf_counter() - t0
    history = _read_history(Path(logger.log_dir) / "metrics.csv")
    best = float(stopper.best_score) if stopper.best_score is not None else float("nan")
    model = cast(torch.nn.Module, system.model).cpu().eval()
    return TrainResult(model, trainer.current_epoch, best, seconds, dm.val_idx, history, logger.log_dir)


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        out.append({k: float(v) for k, v in r.items() if v not in ("", None)})
    return out


def train_autoencoder(
    embeddings: np.ndarray,
    *,
    hidden: tuple[int, ...] = (256,),
    bottleneck: int = 32,
    dropout: float = 0.0,
    standardise: bool = False,
    config: TrainConfig | None = None,
) -> TrainResult:
    """Train an :class:`EmbeddingAutoencoder` on ``embeddings``, standardised per dimension with the mean and
    standard deviation of the training part when ``standardise`` (default: centred only, a plain MSE)."""
    cfg = config or TrainConfig()
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    torch.manual_seed(cfg.seed)
    model = EmbeddingAutoencoder(x.shape[1], hidden=hidden, bottleneck=bottleneck, dropout=dropout)
    dm = EmbeddingDataModule(x, val_fraction=cfg.val_fraction, batch_size=cfg.batch_size, seed=cfg.seed)
    fit_x = x[dm.train_idx]
    model.mean.copy_(torch.as_tensor(fit_x.mean(axis=0)))
    # a floor on the scale keeps near-constant dimensions from dominating the error
    std = fit_x.std(axis=0)
    if standardise:
        model.scale.copy_(torch.as_tensor(np.maximum(std, 0.1 * float(np.median(std)) + 1e-8)))
    else:  # one common scale: the error stays a plain MSE, just in convenient units
        model.scale.fill_(float(np.sqrt((std**2).mean())) + 1e-8)
    return _fit(AutoencoderSystem(model, lr=cfg.lr, weight_decay=cfg.weight_decay), dm, cfg, "autoencoder")


def train_classifier(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    hidden: int = 0,
    dropout: float = 0.1,
    groups: np.ndarray | None = None,
    config: TrainConfig | None = None,
) -> TrainResult:
    """Train a :class:`ClassifierHead` on ``embeddings`` with integer ``labels`` in ``[0, n_classes)``."""
    cfg = config or TrainConfig()
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    torch.manual_seed(cfg.seed)
    model = ClassifierHead(x.shape[1], n_classes, hidden=hidden, dropout=dropout)
    dm = EmbeddingDataModule(
        x, labels, val_fraction=cfg.val_fraction, batch_size=cfg.batch_size, seed=cfg.seed, groups=groups
    )
    return _fit(ClassifierSystem(model, lr=cfg.lr, weight_decay=cfg.weight_decay), dm, cfg, "classifier")
