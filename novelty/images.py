"""Decode anything image-like into an RGB ``PIL.Image``, or fail with a specific error.

Accepted sources: a path (``str`` / ``os.PathLike``), raw encoded ``bytes``, a ``PIL.Image.Image`` or a
numpy array (``H×W``, ``H×W×1|3|4``; uint8, uint16, bool or float in [0, 1]).

What :func:`load_image` guarantees:
- EXIF orientation is applied; every PIL mode (1, L, LA, P, PA, RGBA, CMYK, YCbCr, I;16, I, F, …) becomes RGB;
  transparency is composited onto ``background`` (white by default);
- images above ``max_pixels`` are refused from their header, before any pixel is decoded (decompression bombs);
- JPEGs are decoded at reduced scale (draft mode) when ``min_size`` says fewer pixels are enough;
- animated images yield their first frame;
- every failure raises a subclass of :class:`novelty.errors.ImageError` naming the source and the reason.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from novelty.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidInputError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)

__all__ = ["DEFAULT_MAX_PIXELS", "ImageSource", "describe_source", "load_image", "to_rgb"]

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

#: Refuse images with more pixels than this (a 16k × 8k panorama passes; a 20k × 20k bomb does not).
DEFAULT_MAX_PIXELS = 2**27  # 134 M pixels

# Never let PIL silently accept truncated files: a truncated JPEG must be reported, not half-grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def describe_source(source: Any) -> str:
    """A short name of a source for messages and records."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL {source.mode} {source.width}x{source.height}>"
    if isinstance(source, np.ndarray):
        return f"<array {source.dtype} {tuple(source.shape)}>"
    return f"<{type(source).__name__}>"


def load_image(
    source: ImageSource,
    *,
    min_size: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Decode ``source`` into an RGB image.

    ``min_size``: the smallest side the caller needs; JPEGs larger than that are decoded with DCT scaling
    (1/2, 1/4, 1/8) so that both sides stay ≥ ``min_size`` — much less work for big photos.
    Raises a subclass of :class:`~novelty.errors.ImageError`.
    """
    name = describe_source(source)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, name)
        return to_rgb(source, name=name, background=background)
    if isinstance(source, np.ndarray):
        return to_rgb(_array_to_pil(source, name), name=name, background=background)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise EmptyImageError(name, "zero bytes")
        return _decode(io.BytesIO(data), name, min_size, max_pixels, background)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageNotFoundError(name, "no such file") from None
        except OSError as e:
            raise CorruptImageError(name, f"cannot stat file: {e.strerror or e}") from e
        if path.is_dir():
            raise NotAnImageError(name, "is a directory")
        if size == 0:
            raise EmptyImageError(name, "zero-byte file")
        try:
            with open(path, "rb") as f:
                return _decode(f, name, min_size, max_pixels, background)
        except PermissionError as e:
            raise CorruptImageError(name, f"permission denied: {e.strerror}") from e
    raise InvalidInputError(
        f"cannot read an image from {type(source).__name__}; pass a path, bytes, a PIL image or a numpy array"
    )


def _check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise CorruptImageError(name, f"invalid size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(
            name, f"{w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} (possible decompression bomb)"
        )


def _decode(
    fp: Any, name: str, min_size: int | None, max_pixels: int | None, background: tuple[int, int, int]
) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # our own max_pixels check below replaces PIL's global bomb guard
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(name, f"decompression bomb refused by the decoder: {e}") from e
    except UnidentifiedImageError:
        fp.seek(0)
        head = fp.read(16)
        kind = "text" if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "data"
        raise NotAnImageError(name, f"not a recognised image format (content looks like {kind})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(name, f"unreadable header: {e}") from e
    _check_pixels(img.size, max_pixels, name)
    if getattr(img, "is_animated", False):
        img.seek(0)
    if min_size and img.format == "JPEG":
        img.draft("RGB", (min_size, min_size))
    try:
        img.load()
    except OSError as e:
        msg = str(e)
        if "truncated" in msg or "premature end" in msg.lower():
            raise TruncatedImageError(name, f"file is truncated ({msg})") from e
        raise CorruptImageError(name, f"pixel data cannot be decoded ({msg})") from e
    except (SyntaxError, ValueError, EOFError, IndexError, Image.DecompressionBombError) as e:
        raise CorruptImageError(name, f"pixel data cannot be decoded ({type(e).__name__}: {e})") from e
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        pass
    return to_rgb(img, name=name, background=background)


def to_rgb(img: Image.Image, *, name: str = "<image>", background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to RGB; alpha/transparency is composited onto ``background``."""
    mode = img.mode
    try:
        if mode == "RGB":
            return img
        if mode.startswith("I;16"):  # 16-bit: scale by the full range, even when the image is dark
            arr16 = np.asarray(img).astype(np.uint32)
            return Image.fromarray((arr16 * 255 // 65535).astype(np.uint8)).convert("RGB")
        if mode in ("I", "F"):
            return Image.fromarray(_scale_to_uint8(np.asarray(img), name)).convert("RGB")
        has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
        if has_alpha:
            rgba = img.convert("RGBA")
            base = Image.new("RGBA", rgba.size, (*background, 255))
            return Image.alpha_composite(base, rgba).convert("RGB")
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise UnsupportedImageError(name, f"cannot convert mode {mode} to RGB ({e})") from e


def _scale_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """Map integer or float pixels onto 0..255: 16-bit by its range, floats in [0, 1] by 255."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise UnsupportedImageError(name, "float pixels contain NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.round(arr * 255.0).astype(np.uint8)
        if lo >= 0.0 and hi <= 255.0:
            return np.round(arr).astype(np.uint8)
        raise UnsupportedImageError(name, f"float pixels span [{lo:g}, {hi:g}]; expected [0, 1] or [0, 255]")
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise UnsupportedImageError(name, f"negative pixel values (min {lo})")
        if hi <= 255:
            return arr.astype(np.uint8)
        if hi <= 65535:
            return (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)
        raise UnsupportedImageError(name, f"integer pixels up to {hi} exceed 16 bits")
    raise UnsupportedImageError(name, f"pixel dtype {arr.dtype} is not supported")


def _array_to_pil(arr: np.ndarray, name: str) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim in (2, 3) and arr.shape[0] * arr.shape[1] == 0:
        raise UnsupportedImageError(name, "array has zero height or width")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        return Image.fromarray(np.ascontiguousarray(_scale_to_uint8(arr, name)))
    hint = " (channels first? transpose to H×W×C)" if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else ""
    raise UnsupportedImageError(name, f"array of shape {arr.shape} is not H×W or H×W×(1|3|4){hint}")
