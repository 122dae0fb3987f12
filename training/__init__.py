"""Lightning training for the plain modules of ``novelty.models`` (autoencoder, classifier head).

Imported only when something is trained; inference (``import novelty``, ``novelty.load``) never needs it.
"""

from .fit import TrainConfig, TrainResult, train_autoencoder, train_classifier

__all__ = ["TrainConfig", "TrainResult", "train_autoencoder", "train_classifier"]
