"""The HTTP service: ``novelty serve DETECTOR_DIR`` and the client a production model calls.

- :mod:`novelty.serve.app` — the FastAPI app (``create_app``, ``ServeConfig``); needs ``novelty[serve]``
- :mod:`novelty.serve.client` — ``Client``: standard library only, importable without FastAPI
- :mod:`novelty.serve.batcher` — micro-batching of concurrent requests into one forward pass
- :mod:`novelty.serve.detectors` — the detector being served, its version, hot reload
- :mod:`novelty.serve.auth`, :mod:`novelty.serve.metrics`, :mod:`novelty.serve.cli`

Importing this package imports neither FastAPI nor uvicorn; the flag store is :mod:`novelty.flags`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Client", "ServeConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from novelty.serve.client import Client  # lazy: pulls in torch

        return Client
    if name in ("ServeConfig", "create_app"):
        from novelty.serve import app  # lazy: fastapi is optional

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
