"""A corpus of odd image files built from a real photo, for the decoding tests of :mod:`novelty.images`.

:func:`make_odd_corpus` writes the files and maps each case name to ``(path, expected error class)``
(``None`` when the file must decode into a correct RGB image). :func:`make_odd_corpus_with_references`
also returns, for the files that must decode, the expected size and the expected pixels computed
independently with numpy from the source arrays.

Nothing here allocates the pixels a file's header claims: the "bomb" PNG is crafted byte by byte.
"""

from __future__ import annotations

import contextlib
import io
import signal
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, features

from novelty.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)

__all__ = [
    "CASE_NAMES",
    "PNG_SIGNATURE",
    "Reference",
    "bomb_png",
    "composite",
    "grey_photo",
    "make_odd_corpus",
    "make_odd_corpus_with_references",
    "no_hang",
    "photo",
    "png_chunk",
    "png_file",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WEBP_OK = features.check("webp")

#: every case :func:`make_odd_corpus` can write (``lossless.webp`` only where PIL supports WebP)
CASE_NAMES = (
    "zero_byte.jpg",
    "truncated.jpg",
    "truncated.png",
    "text.jpg",
    "random.png",
    "cmyk.jpg",
    "grey16.png",
    "grey16_dark.png",
    "rgb16.png",
    "palette_trns.png",
    "la.png",
    "rgba.png",
    "bilevel.png",
    "one_pixel.png",
    "animated.gif",
    "exif_rot6.jpg",
    "bomb_header.png",
    "short_idat.png",
    "float.tif",
    "lossless.webp",
    "bitmap.bmp",
    "chat café 猫 photo.png",
    "a_directory.jpg",
    "missing.jpg",
    "trailing_garbage.jpg",
    "corrupt_scan.jpg",
    "scrambled_scan.jpg",
    "corrupt_idat.png",
    "bad_exif.jpg",
    "malformed_mpo.jpg",
    "iphone.heic",
)


@dataclass(frozen=True)
class Reference:
    """What a file that must decode decodes to: ``(width, height)`` and, when known, its pixels.

    ``max_abs``: largest per-pixel difference allowed (lossless formats, rounding);
    ``mean_abs``: largest mean absolute difference allowed (lossy formats).
    """

    size: tuple[int, int]
    pixels: np.ndarray | None = None
    max_abs: int = 0
    mean_abs: float = 0.0


def photo() -> np.ndarray:
    """The real photo every file is made from: ``skimage.data.chelsea()``, 300×451×3 uint8."""
    return np.ascontiguousarray(skimage.data.chelsea())


def grey_photo() -> np.ndarray:
    """The photo in grey levels (uint8), computed with integer weights so the reference is exact."""
    rgb = photo().astype(np.uint32)
    return ((rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114 + 500) // 1000).astype(np.uint8)


def composite(rgb: np.ndarray, alpha: np.ndarray, background: int = 255) -> np.ndarray:
    """``rgb`` (H×W×3) over a uniform ``background`` with ``alpha`` (H×W), rounded to uint8."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.round(rgb.astype(np.float64) * a + background * (1.0 - a)).astype(np.uint8)


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC-32 of type + data."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_file(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A minimal PNG: signature, IHDR, one IDAT holding ``idat`` (already zlib-compressed), IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width × height`` RGB pixels but whose IDAT holds a few bytes."""
    return png_file(width, height, 8, 2, zlib.compress(b"\x00" * 64))


def _rgb16_png(arr16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (PIL cannot write one): filter 0 on every row."""
    h, w, _ = arr16.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr16)
    return png_file(w, h, 16, 2, zlib.compress(raw, 6))


def _segment(marker: int, payload: bytes) -> bytes:
    """A JPEG marker segment (APPn, ...): 0xFF, marker, big-endian length, payload."""
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def make_odd_corpus_with_references(
    dir: Path,
) -> tuple[dict[str, tuple[Path, type[ImageError] | None]], dict[str, Reference]]:
    """Write the corpus into ``dir``; return ``(cases, references)`` (see the module docstring)."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)
    rgb = photo()
    grey = grey_photo()
    h, w = grey.shape
    cases: dict[str, tuple[Path, type[ImageError] | None]] = {}
    refs: dict[str, Reference] = {}

    def put(name: str, data: bytes, expected: type[ImageError] | None, ref: Reference | None = None) -> None:
        path = dir / name
        path.write_bytes(data)
        cases[name] = (path, expected)
        if ref is not None:
            refs[name] = ref

    jpeg = _encode(Image.fromarray(rgb), "JPEG", quality=92)
    photo_ref = Reference((w, h), rgb, max_abs=255, mean_abs=4.0)
    png = _encode(Image.fromarray(rgb), "PNG")

    # --- failures before or instead of decoding ---------------------------------------------------------
    put("zero_byte.jpg", b"", EmptyImageError)
    put("truncated.jpg", jpeg[: int(len(jpeg) * 0.6)], TruncatedImageError)
    put("truncated.png", png[: int(len(png) * 0.6)], TruncatedImageError)
    put("text.jpg", b"This is not a photo of a cat, it is plain text.\n" * 20, NotAnImageError)
    put("random.png", b"\x00RND" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), NotAnImageError)
    put("bomb_header.png", bomb_png(20000, 20000), ImageTooLargeError)
    # header fine (600×400 RGB), but the compressed stream holds only a few rows
    put("short_idat.png", png_file(600, 400, 8, 2, zlib.compress(b"\x00" * 1000)), TruncatedImageError)
    (dir / "a_directory.jpg").mkdir(exist_ok=True)
    cases["a_directory.jpg"] = (dir / "a_directory.jpg", NotAnImageError)
    cases["missing.jpg"] = (dir / "missing.jpg", ImageNotFoundError)

    # --- JPEG variants ------------------------------------------------------------------------------------
    # PIL writes CMYK JPEGs with an Adobe marker and reads them back; naive CMYK of the photo maps back to it
    put(
        "cmyk.jpg",
        _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95),
        None,
        Reference((w, h), rgb, max_abs=255, mean_abs=4.0),
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    put(
        "exif_rot6.jpg",
        _encode(Image.fromarray(rgb), "JPEG", quality=92, exif=exif),
        None,
        Reference((h, w), np.ascontiguousarray(np.rot90(rgb, k=-1)), max_abs=255, mean_abs=4.0),
    )
    put("trailing_garbage.jpg", jpeg + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), None, photo_ref)
    # a tenth of the scan data overwritten in its middle (header and EOI intact). With 0xFF bytes in the
    # garbage libjpeg meets bogus markers and PIL reports a broken stream; without them it decodes a damaged
    # image of the right size (nothing to compare its pixels with)
    sos = jpeg.index(b"\xff\xda")
    start = sos + (len(jpeg) - sos) * 2 // 5
    n_garbage = (len(jpeg) - sos) // 10
    garbage = rng.integers(0, 256, n_garbage, dtype=np.uint8).tobytes()
    put("corrupt_scan.jpg", jpeg[:start] + garbage + jpeg[start + n_garbage :], CorruptImageError)
    garbage = rng.integers(0, 255, n_garbage, dtype=np.uint8).tobytes()  # no 0xFF
    put("scrambled_scan.jpg", jpeg[:start] + garbage + jpeg[start + n_garbage :], None, Reference((w, h)))
    # an EXIF block whose Make tag points far beyond the data (PIL warns) next to orientation 6
    entries = [struct.pack("<HHII", 0x0112, 3, 1, 6), struct.pack("<HHII", 0x010F, 2, 100000, 4000)]
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    put(
        "bad_exif.jpg",
        jpeg[:2] + _segment(0xE1, b"Exif\x00\x00" + tiff) + jpeg[2:],
        None,
        Reference((h, w), np.ascontiguousarray(np.rot90(rgb, k=-1)), max_abs=255, mean_abs=4.0),
    )
    # an APP2 "MPF" segment with a broken index: PIL warns and reads the base JPEG
    mpf = b"MPF\x00II*\x00" + struct.pack("<I", 8) + b"\xff" * 20
    put("malformed_mpo.jpg", jpeg[:2] + _segment(0xE2, mpf) + jpeg[2:], None, photo_ref)
    # an iPhone-style HEIC: an ISO-BMFF "ftyp" box with brand heic, then junk
    heic = struct.pack(">I", 24) + b"ftypheic" + bytes(4) + b"mif1heic" + struct.pack(">I", 16) + b"meta"
    put("iphone.heic", heic + bytes(200), UnsupportedImageError)

    # --- PNG modes ----------------------------------------------------------------------------------------
    grey16 = grey.astype(np.uint16) * 256 + rng.integers(0, 256, grey.shape, dtype=np.uint16)
    grey16_ref = (grey16.astype(np.uint32) * 255 // 65535).astype(np.uint8)  # full-range scaling
    put(
        "grey16.png",
        _encode(Image.fromarray(grey16), "PNG"),
        None,
        Reference((w, h), np.repeat(grey16_ref[..., None], 3, 2)),
    )
    # a dark 16-bit image (every value ≤ 255) is nearly black, not an 8-bit image
    put(
        "grey16_dark.png",
        _encode(Image.fromarray(grey.astype(np.uint16)), "PNG"),
        None,
        Reference((w, h), np.zeros((h, w, 3), np.uint8)),
    )
    rgb16 = rgb.astype(np.uint16) * 256 + rng.integers(0, 256, rgb.shape, dtype=np.uint16)
    # PIL keeps the high byte of each sample; full-range scaling (x * 255 // 65535) may differ by 1
    put("rgb16.png", _rgb16_png(rgb16), None, Reference((w, h), rgb, max_abs=1))

    pal_img = Image.fromarray(rgb).quantize(16)
    alpha_table = bytes([0, 40, 80, 120, 160, 200, 240, 255])
    idx = np.asarray(pal_img)
    palette = np.asarray(pal_img.getpalette() or [], np.uint8)[: 16 * 3].reshape(16, 3)
    alphas = np.full(16, 255, np.uint8)
    alphas[: len(alpha_table)] = list(alpha_table)
    put(
        "palette_trns.png",
        _encode(pal_img, "PNG", transparency=alpha_table),
        None,
        Reference((w, h), composite(palette[idx], alphas[idx]), max_abs=1),
    )

    ramp_x = np.broadcast_to(np.linspace(0, 255, w).round().astype(np.uint8), (h, w))
    ramp_y = np.broadcast_to(np.linspace(0, 255, h).round().astype(np.uint8)[:, None], (h, w))
    put(
        "la.png",
        _encode(Image.fromarray(np.dstack([grey, ramp_x]), "LA"), "PNG"),
        None,
        Reference((w, h), composite(np.repeat(grey[..., None], 3, 2), ramp_x), max_abs=1),
    )
    put(
        "rgba.png",
        _encode(Image.fromarray(np.dstack([rgb, ramp_y]), "RGBA"), "PNG"),
        None,
        Reference((w, h), composite(rgb, ramp_y), max_abs=1),
    )
    mask = grey > 127
    put(
        "bilevel.png",
        _encode(Image.fromarray(mask), "PNG"),
        None,
        Reference((w, h), np.repeat(np.where(mask, 255, 0).astype(np.uint8)[..., None], 3, 2)),
    )
    one = np.array([[[12, 34, 56]]], np.uint8)
    put("one_pixel.png", _encode(Image.fromarray(one), "PNG"), None, Reference((1, 1), one))

    # --- other formats ------------------------------------------------------------------------------------
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    gif = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    put("animated.gif", gif, None, Reference((40, 30), np.full((30, 40, 3), (255, 0, 0), np.uint8)))
    fgrey = (grey.astype(np.float32) / 255.0).astype(np.float32)
    put(
        "float.tif",
        _encode(Image.fromarray(fgrey, "F"), "TIFF"),
        None,
        Reference((w, h), np.repeat(grey[..., None], 3, 2)),
    )
    if WEBP_OK:
        webp = _encode(Image.fromarray(rgb), "WEBP", lossless=True)
        put("lossless.webp", webp, None, Reference((w, h), rgb))
    put("bitmap.bmp", _encode(Image.fromarray(rgb), "BMP"), None, Reference((w, h), rgb))
    put("chat café 猫 photo.png", png, None, Reference((w, h), rgb))
    # a byte of the compressed pixel stream flipped: zlib fails in the middle of the image
    broken = bytearray(png)
    broken[broken.index(b"IDAT") + 4 + 500] ^= 0xFF
    put("corrupt_idat.png", bytes(broken), CorruptImageError)
    return cases, refs


def make_odd_corpus(dir: Path) -> dict[str, tuple[Path, type | None]]:
    """Write the odd files into ``dir``; map each case name to ``(path, expected error class or None)``."""
    return dict(make_odd_corpus_with_references(dir)[0])


@contextlib.contextmanager
def no_hang(seconds: int = 10) -> Iterator[None]:
    """Fail with ``TimeoutError`` instead of hanging forever when the block blocks (e.g. opening a FIFO).

    Uses ``SIGALRM``: main thread, POSIX only."""

    def timeout(signum: int, frame: object) -> None:
        raise TimeoutError(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
