"""The model registry: versions, aliases, the champion, promotion and rollback, with one policy.

``policy`` (the champion stack replayed from the history, promote and rollback with their refusals, the recovery
of an interrupted alias change), written once over ``backend.RegistryBackend`` (the storage operations a backend
implements); the backends: ``store`` (a local registry directory, with ``history`` its event file and ``intake``
the checks of what is registered) and ``mlflow_backend`` (an MLflow model registry).
"""

from novelty.flywheel.registry.store import Registry, RegistryError

__all__ = ["Registry", "RegistryError"]
