"""Decode anything image-like into an RGB ``PIL.Image``, or fail with a specific error.

Accepted sources: a path (``str`` / ``os.PathLike``), raw encoded ``bytes``, a ``PIL.Image.Image`` or a
numpy array (``H×W``, ``H×W×1|3|4``; uint8, uint16, bool or float in [0, 1]).

What :func:`load_image` guarantees:
- EXIF orientation is applied; every PIL mode (1, L, LA, P, PA, RGBA, CMYK, YCbCr, I;16, I, F, …) becomes RGB;
  transparency is composited onto ``background`` (white by default);
- images above ``max_pixels`` are refused from their header, before any pixel is decoded
  (decompression bombs);
- JPEGs are decoded at reduced scale (draft mode) when ``min_size`` says fewer pixels are enough;
- animated images yield their first frame (a PIL image passed in is taken at its current frame);
- every unreadable source raises a subclass of :class:`novelty.errors.ImageError` naming the source and the
  reason, and no PIL warning escapes; a source of the wrong type or an invalid argument raises
  :class:`novelty.errors.InvalidInputError`.
"""

from __future__ import annotations

import errno
import io
import operator
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from novelty.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageNotFoundError,
    ImagePermissionError,
    ImageTooLargeError,
    InvalidInputError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)

__all__ = ["DEFAULT_MAX_PIXELS", "ByteSource", "ImageSource", "describe_source", "load_image", "to_rgb"]


@runtime_checkable
class ByteSource(Protocol):
    """Anything that names itself (``key``) and returns its encoded bytes on demand (``read_bytes()``),
    e.g. a member of a zip or tar archive: the bytes are read inside the decoding worker."""

    @property
    def key(self) -> str: ...

    def read_bytes(self) -> bytes: ...


ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray | ByteSource

#: Refuse images with more pixels than this (a 16k × 8k panorama passes; a 20k × 20k bomb does not).
DEFAULT_MAX_PIXELS = 2**27  # 134 M pixels

# Never let PIL silently accept truncated files: a truncated JPEG must be reported, not half-grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def describe_source(source: Any) -> str:
    """A short name of a source for messages and records."""
    if isinstance(source, ByteSource):
        return str(source.key)
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
    info: dict[str, Any] | None = None,
) -> Image.Image:
    """Decode ``source`` into an RGB image.

    ``info``: a dict that receives ``width`` / ``height`` of the full-size image (upright, before any draft
    scaling) and its ``format``.
    ``min_size``: the smallest side the caller needs; JPEGs larger than that are decoded with DCT scaling
    (1/2, 1/4, 1/8) so that both sides stay ≥ ``min_size`` — much less work for big photos.
    Raises a subclass of :class:`~novelty.errors.ImageError` for every unreadable source
    (:class:`~novelty.errors.InvalidInputError` for a source of the wrong type or an invalid argument).
    """
    min_size, max_pixels = _check_args(min_size, max_pixels)
    name = describe_source(source)
    if info is None:
        info = {}
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, name)
        with _quiet_pil():
            _load_pixels(source, name)
            out = to_rgb(_exif_transpose(source), name=name, background=background)
        info.update(width=out.width, height=out.height, format=source.format)
        return out
    if isinstance(source, np.ndarray):
        out = to_rgb(_array_to_pil(source, name, max_pixels), name=name, background=background)
        info.update(width=out.width, height=out.height, format="array")
        return out
    if isinstance(source, ByteSource) and not isinstance(source, (str, os.PathLike)):
        try:
            data = source.read_bytes()
        except ImageError:
            raise
        except (OSError, ValueError, EOFError) as e:
            raise CorruptImageError(name, f"cannot read the bytes: {e}") from e
        if not data:
            raise EmptyImageError(name, "zero bytes")
        return _decode(io.BytesIO(data), name, min_size, max_pixels, background, info)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise EmptyImageError(name, "zero bytes")
        return _decode(io.BytesIO(data), name, min_size, max_pixels, background, info)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            st = path.stat()
        except ValueError:  # e.g. an embedded NUL byte: no file can have that name
            raise ImageNotFoundError(name, "invalid path") from None
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
                raise ImageNotFoundError(name, "no such file") from None
            if e.errno in (errno.EACCES, errno.EPERM):  # a folder on the path may not be searched
                raise ImagePermissionError(name, f"permission denied: {e.strerror}") from None
            raise CorruptImageError(name, f"cannot stat file: {e.strerror or e}") from e
        if stat.S_ISDIR(st.st_mode):
            raise NotAnImageError(name, "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise NotAnImageError(name, "not a regular file (device, pipe or socket)")
        if st.st_size == 0:
            raise EmptyImageError(name, "zero-byte file")
        with _open_regular(path, name) as f:
            return _decode(f, name, min_size, max_pixels, background, info)
    raise InvalidInputError(
        f"cannot read an image from {type(source).__name__}; pass a path, bytes, a PIL image or a numpy array"
    )


def _open_regular(path: Path, name: str) -> IO[bytes]:
    """``path`` opened for reading, non-blocking: a FIFO or device put there since the ``stat`` raises
    :class:`~novelty.errors.NotAnImageError` instead of blocking forever."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except PermissionError as e:
        raise ImagePermissionError(name, f"permission denied: {e.strerror}") from None
    except (FileNotFoundError, NotADirectoryError):  # removed since stat
        raise ImageNotFoundError(name, "no such file") from None
    except OSError as e:
        raise CorruptImageError(name, f"cannot open file: {e.strerror or e}") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotAnImageError(name, "not a regular file (device, pipe or socket)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_args(min_size: Any, max_pixels: Any) -> tuple[int | None, int | None]:
    return _int_arg("min_size", min_size, 0), _int_arg("max_pixels", max_pixels, 1)


def _int_arg(arg: str, value: Any, lowest: int) -> int | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise InvalidInputError(f"{arg} must be an integer or None, got {value!r}") from None
    if number < lowest:
        raise InvalidInputError(f"{arg} must be ≥ {lowest}, got {number}")
    return number


@contextmanager
def _quiet_pil() -> Iterator[None]:
    """Silence what PIL reports as warnings while decoding odd files (corrupt EXIF, malformed MPO, ...).

    Those files decode fine, and the caller cannot act on the warning; real failures raise instead.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        # our own max_pixels check replaces PIL's global bomb warning
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise CorruptImageError(name, f"invalid size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(
            name,
            f"{w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} (possible decompression bomb)",
        )


#: ISO-BMFF brands of still images PIL may not decode (HEIC needs a plugin; AVIF needs libavif)
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}


def _unidentified(fp: Any, name: str) -> Exception:
    try:
        fp.seek(0)
        head = fp.read(32)
    except (OSError, ValueError):
        head = b""
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        brand = head[8:12].decode("ascii")
        return UnsupportedImageError(
            name, f"HEIF/AVIF image (brand {brand!r}) that PIL could not decode (HEIC needs a plugin)"
        )
    kind = "text" if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:16]) else "data"
    return NotAnImageError(name, f"not a recognised image format (content looks like {kind})")


def _decode(
    fp: Any,
    name: str,
    min_size: int | None,
    max_pixels: int | None,
    background: tuple[int, int, int],
    info: dict[str, Any],
) -> Image.Image:
    with _quiet_pil():
        try:
            img = Image.open(fp)
        except Image.DecompressionBombError as e:
            raise ImageTooLargeError(name, f"decompression bomb refused by the decoder: {e}") from e
        except UnidentifiedImageError:
            raise _unidentified(fp, name) from None
        except MemoryError as e:
            raise ImageTooLargeError(name, "not enough memory to read the header") from e
        except Exception as e:  # any other failure of a format plugin on a malformed header
            if isinstance(e, (EOFError, OSError)) and "truncated" in str(e).lower():
                raise TruncatedImageError(name, f"file ends inside the header ({e})") from e
            raise CorruptImageError(name, f"unreadable header: {e}") from e
        _check_pixels(img.size, max_pixels, name)
        header_size = img.size
        fmt = img.format
        if min_size and img.format == "JPEG":
            img.draft("RGB", (min_size, min_size))
        _load_pixels(img, name)
        drafted = img.size
        upright = _exif_transpose(img)
        if upright.size != drafted:  # rotated by its EXIF orientation
            header_size = header_size[::-1]
        info.update(width=header_size[0], height=header_size[1], format=fmt)
        return to_rgb(upright, name=name, background=background)


def _load_pixels(img: Image.Image, name: str) -> None:
    """Decode the pixels of the current frame (the first one right after ``Image.open``), mapping failures."""
    try:
        img.load()
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower() or "premature end" in msg.lower():
            raise TruncatedImageError(name, f"file is truncated ({msg})") from e
        raise CorruptImageError(name, f"pixel data cannot be decoded ({msg})") from e
    except EOFError as e:
        raise TruncatedImageError(name, f"file is truncated (EOFError: {e})") from e
    except (MemoryError, Image.DecompressionBombError) as e:
        raise ImageTooLargeError(name, f"pixel data too large to decode ({type(e).__name__}: {e})") from e
    except Exception as e:  # SyntaxError, ValueError, struct.error, ... from a format plugin
        raise CorruptImageError(name, f"pixel data cannot be decoded ({type(e).__name__}: {e})") from e


def _exif_transpose(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        return img


def to_rgb(
    img: Image.Image, *, name: str = "<image>", background: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Convert any PIL mode to RGB; alpha/transparency is composited onto ``background``."""
    mode = img.mode
    try:
        if mode == "RGB":
            return img
        if mode.startswith("I;16") or mode in ("I", "F"):
            arr = np.asarray(img)
            # 16-bit: scale by the full range, even when the image is dark
            grey = _scale_uint16(arr) if mode.startswith("I;16") else _scale_to_uint8(arr, name)
            rgb = np.repeat(grey[..., None], 3, axis=2)
            trns = img.info.get("transparency")
            if isinstance(trns, (int, float)) and not isinstance(trns, bool):  # one transparent grey level
                rgb[arr == trns] = background
            return Image.fromarray(rgb)
        if mode == "La":  # premultiplied alpha: PIL converts it to LA only
            img, mode = img.convert("LA"), "LA"
        if _has_alpha(img):
            rgba = img.convert("RGBA")
            base = Image.new("RGBA", rgba.size, (*background, 255))
            return Image.alpha_composite(base, rgba).convert("RGB")
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise UnsupportedImageError(name, f"cannot convert mode {mode} to RGB ({e})") from e


def _has_alpha(img: Image.Image) -> bool:
    """Alpha channel, ``transparency`` entry or RGBA palette (``has_transparency_data`` of PIL ≥ 10.1)."""
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info:
        return True
    return img.mode == "P" and img.palette is not None and img.palette.mode.endswith("A")


def _scale_uint16(arr: np.ndarray) -> np.ndarray:
    """0..65535 onto 0..255 by the full 16-bit range (``x * 255 // 65535``)."""
    return (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)


def _scale_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """Map pixels onto 0..255: uint16 by its full range, floats in [0, 1] by 255, other integers by value.

    Floats in [0, 255] are taken as 8-bit values; integers other than uint16 as 8-bit when ≤ 255 and
    16-bit otherwise (PIL mode ``I`` does not say which).
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return _scale_uint16(arr)
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
            return _scale_uint16(arr)
        raise UnsupportedImageError(name, f"integer pixels up to {hi} exceed 16 bits")
    raise UnsupportedImageError(name, f"pixel dtype {arr.dtype} is not supported")


def _array_to_pil(arr: np.ndarray, name: str, max_pixels: int | None = None) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        if arr.shape[0] * arr.shape[1] == 0:
            raise UnsupportedImageError(name, "array has zero height or width")
        _check_pixels((arr.shape[1], arr.shape[0]), max_pixels, name)
        return Image.fromarray(np.ascontiguousarray(_scale_to_uint8(arr, name)))
    hint = ""
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        hint = f" (channels first? transpose it: arr.transpose(1, 2, 0) gives HxWx{arr.shape[0]})"
    raise UnsupportedImageError(name, f"array of shape {arr.shape} is not HxW or HxWx(1|3|4){hint}")
