"""Anomaly maps in batch results and reports: a small PNG per novel image, and its overlay on the thumbnail.

``novelty score --maps`` writes, for every image flagged novel by a detector with a patch scorer, its anomaly
map as a small 8-bit greyscale PNG (base64 text in the ``anomaly_map`` column; empty for the other rows). Each
map is scaled to its own range (0 = the least novel spot of that image, 255 = the most novel): it shows
*where*; the row's scores say *how much*. The HTML report draws it over the image's thumbnail.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from novelty.errors import InvalidInputError

__all__ = ["MAP_PNG_SIZE", "decode_map_png", "encode_map_png", "overlay_map"]

MAP_PNG_SIZE = 64  # longest side of a map PNG in results, in pixels


def encode_map_png(anomaly_map: np.ndarray, size: tuple[int, int] | None = None) -> str:
    """A map ``(H, W)`` as base64 PNG text (8-bit grey, scaled to its own min–max), resized to fit the image's
    aspect ``size`` = (width, height) within :data:`MAP_PNG_SIZE` pixels; ``""`` for a map that is not finite."""
    from PIL import Image

    m = np.asarray(anomaly_map, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise InvalidInputError(f"an anomaly map must be a non-empty (H, W) array, got shape {m.shape}")
    if not np.isfinite(m).all():
        return ""
    lo, hi = float(m.min()), float(m.max())
    grey = (
        np.zeros(m.shape, np.uint8) if hi <= lo else np.round(255.0 * (m - lo) / (hi - lo)).astype(np.uint8)
    )
    w, h = (m.shape[1], m.shape[0]) if size is None or min(size) <= 0 else (int(size[0]), int(size[1]))
    scale = MAP_PNG_SIZE / max(w, h)
    out = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(grey, mode="L").resize(out, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_map_png(text: str) -> np.ndarray | None:
    """The ``uint8`` map of :func:`encode_map_png` (``None`` for ``""``); :class:`InvalidInputError` otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not text:
        return None
    try:
        with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as img:
            if img.format != "PNG" or img.mode != "L":
                raise InvalidInputError(
                    f"an anomaly map must be an 8-bit grey PNG, got {img.format} {img.mode}"
                )
            return np.asarray(img, dtype=np.uint8).copy()
    except (ValueError, UnidentifiedImageError, OSError) as e:
        raise InvalidInputError(f"not an encoded anomaly map ({e})") from None


def overlay_map(image_jpeg: bytes, map_png: str, *, opacity: float = 0.55) -> bytes:
    """``image_jpeg`` (a thumbnail) with the map drawn over it in a heat colour (transparent where the map is
    low, red to yellow where it is high); JPEG bytes of the thumbnail's size."""
    from PIL import Image

    grey = decode_map_png(map_png)
    with Image.open(io.BytesIO(image_jpeg)) as im:
        base = im.convert("RGB")
    if grey is None:
        return image_jpeg
    m = (
        np.asarray(
            Image.fromarray(grey, mode="L").resize(base.size, Image.Resampling.BILINEAR), dtype=np.float32
        )
        / 255.0
    )
    heat = np.stack(
        [np.ones_like(m), np.clip(2.0 * m - 1.0, 0.0, 1.0), np.zeros_like(m)], axis=-1
    )  # red → yellow
    alpha = (opacity * np.clip((m - 0.3) / 0.7, 0.0, 1.0))[..., None]  # the lowest 30 % stays clear
    rgb = np.asarray(base, dtype=np.float32) / 255.0
    out = np.round(255.0 * ((1.0 - alpha) * rgb + alpha * heat)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(out, mode="RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()
