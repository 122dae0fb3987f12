"""One input of a batch (:class:`InputItem`): a file, an archive member, or an input that cannot be read.

An item is a :class:`novelty.images.ByteSource`: ``load_image(item)`` reads its bytes where it is decoded, in
any process (an item pickles in a few hundred bytes). Files are read with
:func:`novelty.fileio.read_regular_file` (non-blocking open: a FIFO or device put where a file was listed
gives an error, never a hang); archive members through the per-process handle cache of
:mod:`novelty.batch.archives`, never extracted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from novelty.batch.archives import read_member
from novelty.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageNotFoundError,
    ImagePermissionError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)
from novelty.fileio import NotARegularFileError, read_regular_file

__all__ = [
    "DEFAULT_MAX_MEMBER_BYTES",
    "MAX_FILE_BYTES",
    "InputItem",
    "error_class",
    "member_key",
]

#: Archive members larger than this (uncompressed) are refused with a ``too_large`` row unless the caller
#: raises the limit (``--max-member-bytes``, ``max_member_bytes=``). Reading a member holds about twice its
#: size in memory (the decompressed bytes and their copy), per decoding worker, plus the decoded pixels;
#: 256 MiB admits any JPEG or PNG within the decoder's pixel limit and uncompressed 8-bit RGB up to ~89
#: megapixels. Peak memory before and after: ``benchmarks/RESULTS.md``, "Hardening".
DEFAULT_MAX_MEMBER_BYTES = 256 << 20
#: Files on disk larger than this are refused (a file is read once, in one piece).
MAX_FILE_BYTES = 1 << 30

_ERROR_CLASSES: dict[str, type[ImageError]] = {
    cls.reason_code: cls
    for cls in (
        ImageNotFoundError,
        ImagePermissionError,
        ImageTooLargeError,
        CorruptImageError,
        TruncatedImageError,
        NotAnImageError,
        UnsupportedImageError,
        EmptyImageError,
    )
}


def error_class(code: str | None) -> type[ImageError]:
    """The :class:`~novelty.errors.ImageError` subclass of a ``reason_code`` (``CorruptImageError`` if unknown)."""
    return _ERROR_CLASSES.get(code or "", CorruptImageError)


def member_key(archive: str, member: str, occurrence: int = 1) -> str:
    """The key of an archive member: ``archive::member``, and ``archive::member#N`` for the N-th member
    stored under the same name (N ≥ 2)."""
    return f"{archive}::{member}" if occurrence <= 1 else f"{archive}::{member}#{occurrence}"


@dataclass(frozen=True)
class InputItem:
    """One input of a batch: a file, an archive member, or an input that cannot be read (``error``).

    ``key`` is unique in a list from :func:`~novelty.batch.sources.expand_inputs`: the absolute, normalised
    path of a file, or ``"{archive}::{member}"`` (``#2``, ``#3``… appended for later members of the same name
    in one archive). ``path`` is the file or the archive; ``member`` the member name exactly as stored (never
    used to build a path); ``size`` the size in bytes when known; ``error`` why it cannot be read and
    ``error_code`` the matching ``ImageError.reason_code``.
    ``read_bytes()`` returns the content; it is a :class:`novelty.images.ByteSource`, so ``load_image(item)``
    works, in any process.
    """

    key: str
    path: str
    member: str | None = None
    size: int | None = None
    error: str | None = None
    #: where the member's data starts: the data offset in the (uncompressed) tar stream, or the local header
    #: offset of a zip entry; ``None`` for files and where unknown
    offset: int | None = field(default=None, repr=False)
    #: ``(mtime_ns, size)`` of the archive when it was listed: ``offset`` is trusted only while they match
    archive_stamp: tuple[int, int] | None = field(default=None, repr=False)
    error_code: str | None = field(default=None, repr=False)
    #: modification time of the file when it was listed (files only)
    mtime_ns: int | None = field(default=None, repr=False)
    #: 1 for the first member stored under ``member`` in its archive, 2 for the second, …
    occurrence: int = field(default=1, repr=False)
    #: archive members larger than this are refused (see :data:`DEFAULT_MAX_MEMBER_BYTES`)
    max_bytes: int = field(default=DEFAULT_MAX_MEMBER_BYTES, repr=False)

    @property
    def stamp(self) -> str:
        """What the content of this input was when it was listed: size and modification time of the file
        (of the archive, plus the member's size and offset, for a member). A resumed run compares it with
        the stamp of the row written before, so a file changed in between is never left with stale scores."""
        if self.error is not None:
            return f"error:{self.error_code}"
        if self.member is None:
            return f"file:{self.size}:{self.mtime_ns}"
        mtime, archive_size = self.archive_stamp or (None, None)
        return f"member:{self.size}:{self.offset}:{mtime}:{archive_size}"

    def read_bytes(self) -> bytes:
        """The content of the file or archive member; raises an :class:`~novelty.errors.ImageError`."""
        if self.error is not None:
            raise error_class(self.error_code)(self.key, self.error)
        if self.member is None:
            return read_file(self.key, self.path)
        return read_member(self)


def read_file(key: str, path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file (opened non-blocking), or the :class:`~novelty.errors.ImageError` why not."""
    try:
        return read_regular_file(path, max_bytes=max_bytes)
    except NotARegularFileError as e:
        kind = str(e).rpartition(" is ")[2] or "not a regular file"
        raise NotAnImageError(key, f"is {kind}; nothing was read from it") from None
    except OverflowError:
        size = _size(path)
        raise ImageTooLargeError(key, f"file of {size} bytes exceeds {max_bytes:,}") from None
    except (FileNotFoundError, NotADirectoryError):
        raise ImageNotFoundError(key, "no such file") from None
    except PermissionError as e:
        raise ImagePermissionError(key, f"permission denied: {e.strerror}") from None
    except (OSError, ValueError) as e:
        raise CorruptImageError(key, f"cannot read file: {getattr(e, 'strerror', None) or e}") from e


def _size(path: str) -> str:
    try:
        return f"{os.stat(path).st_size:,}"
    except OSError:
        return "more"
