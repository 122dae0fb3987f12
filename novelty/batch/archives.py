"""Reading a member of a zip or tar(.gz) archive in place, never extracted (listing: :mod:`.listing`).

Member names such as ``../../etc/passwd.jpg`` or ``/abs/x.png`` are harmless: they are never used to build a
path. Each process keeps a few open archives (:data:`HANDLE_CACHE_SIZE`, keyed by path, mtime and size; a forked
child starts with none, as the parent's handles share its file offsets). Zip and plain tar members are read
at the offset recorded when listing (O(1) per member); when the archive changed since (mtime/size), members
are looked up by name and occurrence. A ``.tar.gz`` is read through :class:`~novelty.batch.gzipreader.GzipReader`.

A member larger than its item's ``max_bytes`` (:data:`~novelty.batch.items.DEFAULT_MAX_MEMBER_BYTES` unless
raised) is refused: at listing from the size its header records, and again here while reading.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import tarfile
import threading
import zipfile
import zlib
from collections import OrderedDict
from typing import TYPE_CHECKING

from novelty.batch.gzipreader import GzipReader
from novelty.discovery import archive_kind
from novelty.errors import (
    CorruptImageError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    TruncatedImageError,
)

if TYPE_CHECKING:  # items reads members through this module
    from novelty.batch.items import InputItem

log = logging.getLogger(__name__)

__all__ = ["HANDLE_CACHE_SIZE", "open_tar_stream", "read_member"]

#: Open archives kept per process.
HANDLE_CACHE_SIZE = 8


def _zip_methods() -> frozenset[int]:
    methods = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
    try:
        import bz2  # noqa: F401

        methods.add(zipfile.ZIP_BZIP2)
    except ImportError:  # pragma: no cover - Python built without bz2
        pass
    try:
        import lzma  # noqa: F401

        methods.add(zipfile.ZIP_LZMA)
    except ImportError:  # pragma: no cover - Python built without lzma
        pass
    return frozenset(methods)


ZIP_METHODS = _zip_methods()
TarStream = GzipReader | io.BufferedReader


def open_tar_stream(path: str, *, random_access: bool = True) -> TarStream:
    """The archive opened for random access: raw for a plain tar, a :class:`GzipReader` when gzip-ed
    (told by its first bytes, so a gzip-ed ``.tar`` works too)."""
    f = open(path, "rb")  # noqa: SIM115 - owned by the returned object
    try:
        magic = f.read(2)
        f.seek(0)
    except BaseException:
        f.close()
        raise
    if magic != b"\x1f\x8b":
        return f
    # a single forward pass (listing) needs no saved states
    return GzipReader(f) if random_access else GzipReader(f, spacing=1 << 62, max_checkpoints=2)


def _too_large(item: InputItem, size: int) -> None:
    if size > item.max_bytes:
        raise ImageTooLargeError(item.key, too_large_reason(size, item.max_bytes))


def too_large_reason(size: int, limit: int) -> str:
    return (
        f"archive member of {size:,} bytes exceeds the limit of {limit:,} (raise it with --max-member-bytes)"
    )


# --- reading -------------------------------------------------------------------------------------------
class _Archive:
    """An archive open in this process; used under ``lock`` (a handle has one file position)."""

    def __init__(self, path: str, stamp: tuple[int, int]) -> None:
        self.path = path
        self.stamp = stamp
        self.lock = threading.Lock()
        self.closed = False

    def read(self, item: InputItem) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _missing(item: InputItem) -> ImageNotFoundError:
    return ImageNotFoundError(item.key, "no such member in the archive (changed since listing?)")


class _ZipArchive(_Archive):
    def __init__(self, path: str, stamp: tuple[int, int]) -> None:
        super().__init__(path, stamp)
        self.zf = zipfile.ZipFile(path)
        self._by_offset: dict[int, zipfile.ZipInfo] | None = None

    def _info(self, item: InputItem) -> zipfile.ZipInfo:
        if item.offset is not None:
            if self._by_offset is None:  # once per handle: O(n)
                self._by_offset = {info.header_offset: info for info in self.zf.infolist()}
            found = self._by_offset.get(item.offset)
            if found is not None and found.filename == item.member:
                return found
        same = [i for i in self.zf.infolist() if i.filename == item.member and zip_regular(i)]
        if len(same) < item.occurrence:
            raise _missing(item)
        return same[item.occurrence - 1]

    def read(self, item: InputItem) -> bytes:
        info = self._info(item)
        if info.flag_bits & 0x1:
            raise CorruptImageError(item.key, "encrypted zip member (password-protected)")
        _too_large(item, info.file_size)
        try:
            with self.zf.open(info) as fh:
                data = fh.read(item.max_bytes + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as e:
            raise CorruptImageError(item.key, f"cannot read zip member: {e}") from e
        _too_large(item, len(data))
        return data

    def close(self) -> None:
        self.zf.close()


class _TarArchive(_Archive):
    def __init__(self, path: str, stamp: tuple[int, int]) -> None:
        super().__init__(path, stamp)
        self.f = open_tar_stream(path)
        self._tf: tarfile.TarFile | None = None
        self._by_name: dict[str, list[tarfile.TarInfo]] | None = None

    def _lookup(self, item: InputItem) -> tuple[tarfile.TarFile, tarfile.TarInfo]:
        """Find a member by name and occurrence (archive changed since listing, or sparse): one full scan, then
        the open archive and the member."""
        if self._tf is None or self._by_name is None:
            self.f.seek(0)
            self._tf = tarfile.open(fileobj=self.f, mode="r:")  # noqa: SIM115 - closed with the handle
            self._by_name = {}
            for ti in self._tf:
                if ti.isreg():
                    self._by_name.setdefault(ti.name, []).append(ti)
        same = self._by_name.get(item.member or "", [])
        if len(same) < item.occurrence:
            raise _missing(item)
        return self._tf, same[item.occurrence - 1]

    def read(self, item: InputItem) -> bytes:
        try:
            if item.offset is not None and item.size is not None and item.archive_stamp == self.stamp:
                size = item.size
                _too_large(item, size)
                self.f.seek(item.offset)
                data = self.f.read(size)
            else:
                tf, ti = self._lookup(item)
                size = ti.size
                _too_large(item, size)
                fh = tf.extractfile(ti)
                data = fh.read() if fh is not None else b""
        except ImageError:
            raise
        except EOFError as e:
            raise TruncatedImageError(item.key, f"the archive is truncated: {e}") from e
        except (tarfile.TarError, zlib.error, OSError, ValueError) as e:
            raise CorruptImageError(item.key, f"cannot read tar member: {e}") from e
        if len(data) != size:
            raise TruncatedImageError(
                item.key, f"archive ends inside the member ({len(data):,} of {size:,} bytes)"
            )
        return data

    def close(self) -> None:
        if self._tf is not None:
            self._tf.close()
        self.f.close()


class _HandleCache:
    """The open archives of this process, most recently used last; a forked child starts empty."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._open: OrderedDict[tuple[str, int, int], _Archive] = OrderedDict()

    def get(self, key: str, path: str) -> _Archive:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ImageNotFoundError(key, "the archive no longer exists") from None
        except OSError as e:
            raise CorruptImageError(key, f"cannot stat the archive: {e.strerror or e}") from e
        if not stat.S_ISREG(st.st_mode):  # replaced by a FIFO or a device: never open it
            raise CorruptImageError(key, "the archive is no longer a regular file")
        ck = (path, st.st_mtime_ns, st.st_size)
        with self._lock:
            archive = self._open.get(ck)
            if archive is not None:
                self._open.move_to_end(ck)
                return archive
            for old in [k for k in self._open if k[0] == path]:  # the archive changed: drop the old handle
                self._close(self._open.pop(old))
            archive = self._new(key, path, (st.st_mtime_ns, st.st_size))
            self._open[ck] = archive
            while len(self._open) > self.size:
                self._close(self._open.popitem(last=False)[1])
            return archive

    @staticmethod
    def _new(key: str, path: str, stamp: tuple[int, int]) -> _Archive:
        try:
            if archive_kind(path) == "zip":
                return _ZipArchive(path, stamp)
            return _TarArchive(path, stamp)
        except FileNotFoundError:
            raise ImageNotFoundError(key, "the archive no longer exists") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise CorruptImageError(key, f"cannot open the archive: {e}") from e

    @staticmethod
    def _close(archive: _Archive) -> None:
        with archive.lock:
            archive.closed = True
            try:
                archive.close()
            except Exception:  # closing a read-only file cannot lose data
                log.debug("closing %s failed", archive.path, exc_info=True)

    def clear(self) -> None:
        with self._lock:
            while self._open:
                self._close(self._open.popitem()[1])

    def after_fork(self) -> None:
        # the parent's handles share file offsets with the parent: never use them here
        self._reset()


_HANDLES = _HandleCache(HANDLE_CACHE_SIZE)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_HANDLES.after_fork)


def read_member(item: InputItem) -> bytes:
    """The bytes of the archive member ``item``; raises an :class:`~novelty.errors.ImageError`."""
    for _ in range(3):  # a handle another thread closed (evicted) just before we locked it: retry
        archive = _HANDLES.get(item.key, item.path)
        with archive.lock:
            if not archive.closed:
                return archive.read(item)
    raise CorruptImageError(item.key, "the archive was closed while being read")  # pragma: no cover


def zip_regular(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return not (info.is_dir() or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))
