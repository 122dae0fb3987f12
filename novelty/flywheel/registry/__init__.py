"""The model registry: versions, aliases, the champion, promotion and rollback, with one policy.

``store`` (the local registry directory and the event history every backend replays), ``mlflow_backend``
(the same policy over an MLflow model registry).
"""

from novelty.flywheel.registry.store import Registry, RegistryError

__all__ = ["Registry", "RegistryError"]
