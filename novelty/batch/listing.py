"""Listing the image members of a zip or tar(.gz) archive, as :class:`~novelty.batch.items.InputItem`.

**Every** member is listed, also several stored under the same name (``unzip`` and ``tar`` would extract the
last copy over the first, so a scan that read only one could let an image slip past): the first copy is
``archive::name``, the second ``archive::name#2``, the third ``#3`` (in stored order), each with its own row;
:mod:`.archives` reads each copy by its offset, or by name and rank when the archive changed since.
Hidden members (``.name`` anywhere in the path), directories and links are skipped; members with an image
suffix are items whatever they contain, others only when their first bytes are an image signature. Members
that cannot be read (encrypted, unknown compression, larger than ``max_bytes``) are error items.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable

from novelty.batch.archives import ZIP_METHODS, TarStream, open_tar_stream, too_large_reason, zip_regular
from novelty.batch.items import DEFAULT_MAX_MEMBER_BYTES, InputItem, member_key
from novelty.discovery import SNIFF_BYTES, archive_kind, is_image_name, looks_like_image

__all__ = ["ArchiveListing", "list_archive"]


class ArchiveListing:
    """The image members of one archive: ``items`` (sorted by name), ``problem`` (why listing stopped
    early, or ``None``), and ``skipped`` (members left out, by reason)."""

    def __init__(self) -> None:
        self.items: list[InputItem] = []
        self.problem: str | None = None
        self.skipped: Counter[str] = Counter()
        self._occurrences: Counter[str] = Counter()
        self._keys: set[str] = set()

    def occurrence(self, name: str) -> int:
        """Count one more regular member stored under ``name``; returns its rank (1 for the first)."""
        self._occurrences[name] += 1
        return self._occurrences[name]

    def key(self, path: str, name: str, occurrence: int) -> str:
        key = member_key(path, name, occurrence)
        while key in self._keys:  # a member literally named "x.jpg#2" next to two "x.jpg"
            key += f"#{occurrence}"
        self._keys.add(key)
        return key


def _is_hidden_member(name: str) -> bool:
    return any(part.startswith(".") and part not in (".", "..") for part in name.split("/"))


def _name_key(name: str) -> list[str]:
    return name.split("/")


def list_archive(
    path: str, st: os.stat_result, *, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES
) -> ArchiveListing:
    """The image members of the zip or tar(.gz) archive ``path`` (``st``: its ``stat``). Members with an image
    suffix are items whatever they contain; others only when their first bytes are an image signature."""
    stamp = (st.st_mtime_ns, st.st_size)
    lst = ArchiveListing()
    if archive_kind(path) == "zip":
        _list_zip(path, stamp, max_bytes, lst)
    else:
        _list_tar(path, stamp, max_bytes, lst)
    lst.items.sort(key=lambda it: _name_key(it.member or ""))  # stable: copies of a name keep their order
    return lst


def _member(
    lst: ArchiveListing,
    path: str,
    name: str,
    size: int,
    stamp: tuple[int, int],
    max_bytes: int,
    offset: int | None,
    sniff: Callable[[], bytes | None],
    problem: tuple[str, str] | None = None,
) -> None:
    """Add one regular member (or count why it is skipped)."""
    occurrence = lst.occurrence(name)
    if _is_hidden_member(name):
        lst.skipped["hidden"] += 1
        return
    by_name = is_image_name(name)
    if problem is None and size > max_bytes:
        problem = ("too_large", too_large_reason(size, max_bytes))
    if not by_name:
        if problem is not None and problem[0] != "too_large":  # encrypted, unknown method: cannot look inside
            lst.skipped["unreadable archive member without an image suffix"] += 1
            return
        head = sniff()
        if head is None:
            lst.skipped["unreadable archive member without an image suffix"] += 1
            return
        if not looks_like_image(head):
            lst.skipped["not an image"] += 1
            return
    code, reason = problem if problem is not None else (None, None)
    lst.items.append(
        InputItem(
            lst.key(path, name, occurrence),
            path,
            name,
            size,
            reason,
            offset if problem is None else None,
            stamp if problem is None else None,
            error_code=code,
            occurrence=occurrence,
            max_bytes=max_bytes,
        )
    )


def _list_zip(path: str, stamp: tuple[int, int], max_bytes: int, lst: ArchiveListing) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as e:
        reason = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
        lst.problem = f"corrupt or unreadable zip archive: {reason}"
        return
    with zf:
        for info in zf.infolist():  # stored order: the first copy of a name is "name", the next "name#2"
            if not zip_regular(info):
                if stat.S_ISLNK(info.external_attr >> 16):
                    lst.skipped["symbolic link in an archive"] += 1
                continue
            problem = None
            if info.flag_bits & 0x1:
                problem = ("corrupt", "encrypted zip member (password-protected): cannot be read")
            elif info.compress_type not in ZIP_METHODS:
                problem = (
                    "unsupported",
                    f"zip member compressed with unsupported method {info.compress_type}",
                )

            def sniff(info: zipfile.ZipInfo = info) -> bytes | None:
                try:
                    with zf.open(info) as fh:
                        return fh.read(SNIFF_BYTES)
                except Exception:  # a corrupt entry: we cannot tell what it is
                    return None

            _member(
                lst, path, info.filename, info.file_size, stamp, max_bytes, info.header_offset, sniff, problem
            )


def _list_tar(path: str, stamp: tuple[int, int], max_bytes: int, lst: ArchiveListing) -> None:
    try:
        f = open_tar_stream(path, random_access=False)
    except OSError as e:
        lst.problem = f"cannot open the tar archive: {e.strerror or e}"
        return
    with f:
        try:
            tf = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 - only reads f, closed below
        except (tarfile.TarError, zlib.error, EOFError, OSError, ValueError) as e:
            lst.problem = f"corrupt or unreadable tar archive: {e}"
            return
        try:
            while True:
                ti = tf.next()
                if ti is None:
                    break
                members = getattr(tf, "members", None)  # listing only: do not keep every header
                if isinstance(members, list):
                    members.clear()
                if not ti.isreg():
                    if ti.issym() or ti.islnk():
                        lst.skipped["link in an archive"] += 1
                    continue

                def sniff(ti: tarfile.TarInfo = ti) -> bytes | None:
                    f.seek(ti.offset_data)
                    return f.read(min(SNIFF_BYTES, ti.size))

                offset = None if ti.issparse() else ti.offset_data
                _member(lst, path, ti.name, ti.size, stamp, max_bytes, offset, sniff)
            end = tf.offset
            if _nonzero_after(f, end):
                lst.problem = (
                    f"unreadable data after offset {end:,} (corrupt header, or concatenated archives): "
                    "later members are not listed"
                )
        except (tarfile.TarError, zlib.error, EOFError, OSError, ValueError) as e:
            lst.problem = f"corrupt or truncated tar archive: {e}"
        finally:
            tf.close()


def _nonzero_after(f: TarStream, offset: int) -> bool:
    """Whether the tar stream holds anything but zero padding from ``offset`` (where listing stopped)."""
    f.seek(offset)
    while True:
        chunk = f.read(64 << 10)
        if not chunk:
            return False
        if chunk.strip(b"\x00"):
            return True
