"""Thumbnails for the report: small JPEGs of scored images and of their nearest training images.

Images are read through the batch layer's own readers (:func:`novelty.batch.sources.item_for_row`: files
opened non-blocking, archive members read in place with the same size limit, never extracted) and decoded by
:func:`novelty.images.load_image`. A thumbnail that cannot be made never breaks the report: the placeholder
says why.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image

from novelty.batch.sources import item_for_row
from novelty.images import ImageSource, load_image

__all__ = [
    "NEIGHBOR_THUMBNAIL_SIZE",
    "THUMBNAIL_SIZE",
    "load_neighbor_thumbnail",
    "load_row_thumbnail",
    "make_thumbnail",
]

#: the longest side of the embedded thumbnails, in pixels
THUMBNAIL_SIZE = 160
#: the longest side of the nearest training images' thumbnails (shown at 72 px)
NEIGHBOR_THUMBNAIL_SIZE = 120
_JPEG_QUALITY = 82


def _encode(img: Image.Image, size: int) -> bytes:
    img = img.convert("RGB") if img.mode != "RGB" else img.copy()
    img.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=_JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def _thumbnail_of(source: ImageSource, size: int = THUMBNAIL_SIZE) -> bytes:
    return _encode(load_image(source, min_size=size), size)


def load_row_thumbnail(row: Mapping[str, Any]) -> bytes | None:
    """The default ``load_thumbnail``: a JPEG thumbnail of the row's file or archive member.

    Raises :class:`novelty.errors.ImageError` (with the reason) when it cannot be read or decoded."""
    key, path, member = (str(row.get(c) or "") for c in ("key", "path", "member"))
    if not key and not path:
        return None
    return _thumbnail_of(item_for_row(key or path, path, member))


def load_neighbor_thumbnail(train_id: str) -> bytes | None:
    """The default ``load_neighbor_thumbnail``: a thumbnail of the training image ``train_id`` when it is a
    file path that exists here (or ``ARCHIVE::MEMBER`` of an archive that exists); ``None`` otherwise."""
    if not train_id:
        return None
    try:
        if os.path.isfile(train_id):
            return _thumbnail_of(item_for_row(train_id))
        if "::" in train_id:
            archive, _, member = train_id.partition("::")
            if member and os.path.isfile(archive):
                return _thumbnail_of(item_for_row(train_id))
    except ValueError:  # e.g. an embedded NUL byte
        return None
    return None


def _normalise(data: bytes, size: int) -> bytes:
    """JPEG bytes of at most ``size`` px from any encoded image (kept as is when it already is one)."""
    if data[:3] == b"\xff\xd8\xff":
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.format == "JPEG" and max(im.size) <= size and im.mode in ("RGB", "L"):
                    im.load()  # a broken JPEG must not reach the page
                    return data
        except Exception:
            pass
    return _thumbnail_of(bytes(data), size)


def _reason(e: BaseException) -> str:
    code, reason = getattr(e, "reason_code", None), getattr(e, "reason", None)
    if code and reason:
        return f"{code}: {reason}"
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def make_thumbnail(load: Callable[[Any], bytes | None], arg: Any, size: int) -> tuple[str | None, str]:
    """``(base64 JPEG, "")`` of ``load(arg)``, or ``(None, reason)``; never raises (but KeyboardInterrupt)."""
    try:
        data = load(arg)
        if data is None:
            return None, "no image available"
        if not data:
            return None, "empty image"
        return base64.b64encode(_normalise(bytes(data), size)).decode("ascii"), ""
    except Exception as e:
        return None, _reason(e)
