"""File mechanics every layer shares: atomic writes, fsync, sha256, and safe reads.

One place, one policy:

- :func:`atomic_write` / :func:`atomic_write_bytes` / :func:`atomic_open` write a file so that it is either
  complete or absent: a temporary sibling, ``fsync``, ``os.replace``, then ``fsync`` of the directory.
  The final file gets the permissions of an ordinary new file (``0o666`` less the umask), never the
  ``0o600`` of ``tempfile.mkstemp``.
- :func:`sha256_file` / :func:`sha256_bytes` hash files and bytes.
- :func:`read_regular_file` reads a file's bytes once, refusing anything that is not a regular file
  (a FIFO, a device, a directory) without ever blocking on it.
- :func:`csv_text_cell` / :func:`csv_text_value`: every text cell of every CSV the package writes goes through
  the first (a spreadsheet must not run a file name such as ``=cmd|' /C calc'!A0.jpg`` as a formula), and every
  CSV it reads back through the second.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "NotARegularFileError",
    "atomic_open",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "csv_text_cell",
    "csv_text_value",
    "fsync_dir",
    "read_regular_file",
    "sha256_bytes",
    "sha256_file",
    "temp_sibling",
]

TMP_PREFIX = ".novelty-tmp-"
_CHUNK = 1 << 20


class NotARegularFileError(OSError):
    """The path names a FIFO, device, socket or directory where a regular file was expected."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be fsynced)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_sibling(path: Path, *, directory: bool = False, tmp_dir: Path | None = None) -> Path:
    """Create (exclusively) and return a new temporary file or directory next to ``path``."""
    where = path.parent if tmp_dir is None else tmp_dir
    for _ in range(100):
        tmp = where / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}"
        try:
            if directory:
                tmp.mkdir()
            else:  # not tempfile.mkstemp: its files are 0600, this one gets the umask's permissions
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file in {where}")


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Path], object], *, tmp_dir: Path | None = None
) -> Path:
    """Write ``path`` with ``write(tmp_path)`` so that it is either complete or absent."""
    path = Path(path)
    tmp = temp_sibling(path, tmp_dir=tmp_dir)
    try:
        write(tmp)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """``with atomic_open(p) as fh: fh.write(...)``: the file appears complete on success, never partly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def read_regular_file(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file, read once. Opens non-blocking, so a FIFO or device never hangs the
    caller; anything but a regular file raises :class:`NotARegularFileError`. ``max_bytes`` bounds the read
    (raising ``OverflowError`` when the file is larger)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(st.st_mode)
                else "a directory"
                if stat.S_ISDIR(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "not a regular file"
            )
            raise NotARegularFileError(f"{os.fspath(path)} is {kind}, not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise OverflowError(
                f"{os.fspath(path)} holds {st.st_size} bytes, more than the limit of {max_bytes}"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        chunks = []
        limit = None if max_bytes is None else max_bytes + 1
        total = 0
        while True:
            block = os.read(fd, _CHUNK if limit is None else min(_CHUNK, limit - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
            if limit is not None and total >= limit:
                raise OverflowError(f"{os.fspath(path)} grew past the limit of {max_bytes} bytes while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


# --- CSV cells ------------------------------------------------------------------------------------------
#: a text cell that a spreadsheet would read as a formula: it begins with = + - @ tab or CR (OWASP's list),
#: possibly after single quotes (so that a cell neutralised once is told apart from text that began with ')
_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_NEUTRALISED = re.compile(r"'+[=+\-@\t\r]")


def csv_text_cell(text: str) -> str:
    """A text cell as the package writes it into a CSV file: text that a spreadsheet would run as a formula
    (it begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, possibly after single quotes) gets one
    leading ``'``, OWASP's rule against CSV injection; anything else is written as it is.

    The rule is for text only (file names, archive members, ids, class names, labellers, messages): numbers the
    package writes (``-0.5``, ``-1e999``) are not text and are never quoted, so they stay numbers.
    :func:`csv_text_value` undoes it exactly."""
    return "'" + text if _FORMULA.match(text) else text


def csv_text_value(cell: str) -> str:
    """The text of a cell written by :func:`csv_text_cell` (one leading ``'`` removed before a formula
    character; any other cell unchanged): ``csv_text_value(csv_text_cell(s)) == s`` for every string."""
    return cell[1:] if _NEUTRALISED.match(cell) else cell
