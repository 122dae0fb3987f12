"""ImageNet-C corruptions (the ``imagecorruptions`` package) on one frame, adapted to NumPy 2 and
scikit-image >= 0.19 for the duration of each call only.

imagecorruptions 1.1.2 calls ``np.float_`` (gone in NumPy 2), draws from the global ``np.random`` and passes
scikit-image's removed ``multichannel`` argument. :func:`corrupt` swaps, under a lock and only while the
corruption runs, the module's ``np`` for a proxy that adds ``float_`` and draws from the caller's seeded
``RandomState``, and its ``gaussian`` for one that translates ``multichannel`` to ``channel_axis``; then it
puts the originals back. Nothing in site-packages is touched, nothing stays patched between calls, and
other users of imagecorruptions in the process see the module as it ships.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import threading
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from novelty.datasets.loaders import DatasetNotInstalledError

__all__ = ["INSTALL_HINT", "corrupt"]

INSTALL_HINT = (
    "run `make windshield-data`, or by hand: `pip install --no-deps imagecorruptions && "
    "pip install 'novelty[windshield]'`"
)

_LOCK = threading.Lock()  # the adaptation is module-wide while it lasts: one corruption call at a time
_MODULE: types.ModuleType | None = None


class _NumpyWithSeededRandom(types.ModuleType):
    """What imagecorruptions sees as ``np`` during a call: NumPy plus ``float_`` and the caller's ``random``."""

    def __init__(self, rs: np.random.RandomState) -> None:
        super().__init__("numpy")
        self.float_ = np.float64
        self.random = rs

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def _resource_filename(package: str, resource: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise DatasetNotInstalledError(f"cannot locate package {package}: {INSTALL_HINT}")
    return str(Path(spec.origin).parent / resource)


def _module() -> types.ModuleType:
    """``imagecorruptions.corruptions``, imported once (callers hold ``_LOCK``)."""
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    try:
        importlib.import_module("cv2")
    except ImportError as exc:
        raise DatasetNotInstalledError(
            f"the corruptions need OpenCV (opencv-python-headless): {INSTALL_HINT}"
        ) from exc
    stub_added = False
    with warnings.catch_warnings():
        # pkg_resources and scipy.ndimage.interpolation warn that they are deprecated
        warnings.simplefilter("ignore")
        try:
            importlib.import_module("pkg_resources")
        except ImportError:  # setuptools >= 81 has no pkg_resources: frost only needs resource_filename
            stub = types.ModuleType("pkg_resources")
            stub.resource_filename = _resource_filename  # type: ignore[attr-defined]
            sys.modules["pkg_resources"] = stub
            stub_added = True
        try:
            _MODULE = importlib.import_module("imagecorruptions.corruptions")
        except ImportError as exc:
            raise DatasetNotInstalledError(
                f"the windshield conditions need imagecorruptions and its dependencies ({exc}): {INSTALL_HINT}"
            ) from exc
        finally:
            if stub_added:
                del sys.modules["pkg_resources"]
    return _MODULE


def _accepting_multichannel(gaussian: Callable[..., Any]) -> Callable[..., Any]:
    if "multichannel" in inspect.signature(gaussian).parameters:
        return gaussian

    def wrapped(image: Any, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
        if multichannel is not None and "channel_axis" not in kwargs:
            kwargs["channel_axis"] = -1 if multichannel else None
        return gaussian(image, *args, **kwargs)

    return wrapped


def corrupt(name: str, frame: np.ndarray, severity: int, rs: np.random.RandomState) -> np.ndarray:
    """imagecorruptions' ``name`` at ``severity`` on one uint8 RGB frame, drawing randomness from ``rs``.

    Returns the corruption's float output as a float32 array (values on the 0..255 scale)."""
    from PIL import Image

    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = _module()
        saved_np, saved_gaussian = module.np, module.gaussian
        module.np = _NumpyWithSeededRandom(rs)  # type: ignore[attr-defined]
        module.gaussian = _accepting_multichannel(saved_gaussian)  # type: ignore[attr-defined]
        try:
            out = getattr(module, name)(Image.fromarray(frame), severity)
        finally:
            module.np, module.gaussian = saved_np, saved_gaussian  # type: ignore[attr-defined]
    return np.asarray(out, dtype=np.float32)
