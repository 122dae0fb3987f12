"""Reading image files for a labelled dataset: hashing a file (:func:`hash_image_file`) and reading one once
to hash and decode it (:func:`read_image_file`), so that a file that is not an image never becomes a labelled
entry."""

from __future__ import annotations

import os

from novelty.errors import ImageError, InvalidInputError
from novelty.fileio import read_regular_file, sha256_bytes, sha256_file
from novelty.images import load_image

__all__ = ["hash_image_file", "read_image_file"]


def hash_image_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a regular file, or :class:`InvalidInputError` naming it when it cannot be read."""
    try:
        return sha256_file(_regular(path))
    except (OSError, ValueError) as e:
        raise InvalidInputError(
            f"{os.fspath(path)}: cannot read the image file ({getattr(e, 'strerror', None) or e})"
        ) from None


def read_image_file(path: str | os.PathLike[str], sha256: str | None = None) -> str:
    """The sha256 of an image file, read once and decoded with :func:`novelty.images.load_image` (at reduced
    scale where the format allows): a file that is not an image the package can read — a text file, a
    truncated JPEG, a decompression bomb — raises :class:`InvalidInputError` naming the path and the reason,
    so that it never becomes a labelled entry. With ``sha256`` (what the file should hold), a file whose hash
    differs is not decoded: its hash is returned for the caller to report the change."""
    p = os.fspath(path)
    try:
        data = read_regular_file(_regular(p))
    except (OSError, ValueError) as e:
        raise InvalidInputError(
            f"{p}: cannot read the image file ({getattr(e, 'strerror', None) or e})"
        ) from None
    sha = sha256_bytes(data)
    if sha256 is not None and sha != sha256:
        return sha
    try:
        load_image(_NamedBytes(p, data), min_size=1)
    except ImageError as e:
        raise InvalidInputError(f"{p}: not an image ({e.reason})") from None
    return sha


class _NamedBytes(bytes):
    """Bytes already read, named by their file: still ``bytes`` to whoever wants bytes, and a
    :class:`~novelty.images.ByteSource` to the decoder, so that a decoding error names the path, not
    ``<1294 bytes>``."""

    key: str

    def __new__(cls, key: str, data: bytes) -> _NamedBytes:
        out = super().__new__(cls, data)
        out.key = key
        return out

    def read_bytes(self) -> bytes:
        return bytes(self)

    def __reduce__(self) -> tuple[type[_NamedBytes], tuple[str, bytes]]:  # to decoding worker processes
        return (type(self), (self.key, bytes(self)))


def _regular(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(2, "no such regular file", p)
    return p
