"""On-disk caches of decoded data and embeddings: one root folder, atomic writes, no pickle.

The root is ``$NOVELTY_CACHE`` when set, else ``~/.cache/novelty``; each user of the cache takes a
subfolder (``windshield``, ``datasets``, ``embeddings``). A cache file is written to a temporary file next
to its target, fsynced and moved over it, so a killed process never leaves a half-written cache behind.
A cache that cannot be written costs a warning, never the result.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from novelty.fileio import atomic_open

__all__ = ["atomic_file", "cache_root", "write_cache"]


def cache_root(subfolder: str | None = None) -> Path:
    """``$NOVELTY_CACHE`` (or ``~/.cache/novelty``), optionally joined with ``subfolder``."""
    root = os.environ.get("NOVELTY_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "novelty"
    return base / subfolder if subfolder else base


atomic_file = atomic_open  # kept as the cache's name for it


def write_cache(path: Path, write: Callable[[Any], None], *, owner: str = "novelty") -> None:
    """Write a cache file atomically with ``write(fh)``; failure to write only warns."""
    try:
        with atomic_file(path) as fh:
            write(fh)
    except OSError as exc:
        warnings.warn(f"{owner}: cannot write the cache {path}: {exc}", RuntimeWarning, stacklevel=3)
