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
- :class:`ExclusiveFileLock` is the one lock between processes (and between threads of one process): an exclusive
  lock of a lock file, waited for with or without a limit, that raises the caller's own errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import filelock

from novelty.errors import InvalidInputError

__all__ = [
    "ExclusiveFileLock",
    "JsonlLineError",
    "NotARegularFileError",
    "append_jsonl",
    "atomic_open",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "csv_text_cell",
    "csv_text_value",
    "fsync_dir",
    "is_sha256",
    "read_jsonl",
    "read_regular_file",
    "sha256_bytes",
    "sha256_file",
    "sorted_sha256",
    "source_sha256",
    "temp_sibling",
]

TMP_PREFIX = ".novelty-tmp-"
_CHUNK = 1 << 20


class JsonlLineError(ValueError):
    """A complete line of an append-only JSON-lines log that is no JSON object (the file was damaged or edited);
    ``line`` counts from 1."""

    def __init__(self, path: Path, line: int, reason: str):
        super().__init__(f"{path}, line {line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


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


def is_sha256(value: object) -> bool:
    """Whether ``value`` is a sha256 hex digest as this package writes them (64 lower-case hex digits)."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def sorted_sha256(values: Iterable[object], n: int | None = None, what: str = "sha256") -> tuple[str, ...]:
    """``values`` checked to be sha256 digests (``n`` of them when given), sorted and without repeats."""
    vals = list(values)
    if n is not None and len(vals) != n:
        raise InvalidInputError(f"{what} has {len(vals)} entries for {n} images")
    bad = [v for v in vals if not is_sha256(v)]
    if bad:
        raise InvalidInputError(
            f"{what}: {len(bad)} value(s) are not 64 lower-case hex digits, e.g. {bad[0]!r}"
        )
    return tuple(sorted(set(map(str, vals))))


def source_sha256(sources: Sequence[object]) -> list[str] | None:
    """The sha256 of each image source's bytes: a path's file, the bytes themselves; ``None`` when any source
    is neither (a decoded image or an array has no bytes of its own) or a file cannot be read."""
    out: list[str] = []
    for s in sources:
        if isinstance(s, (bytes, bytearray, memoryview)):
            out.append(sha256_bytes(bytes(s)))
        elif isinstance(s, (str, os.PathLike)):
            try:
                out.append(sha256_file(s))
            except OSError:
                return None
        else:
            return None
    return out


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


# --- the lock between processes --------------------------------------------------------------------------
#: how often a lock is taken again when its directory was replaced meanwhile, before giving up
_REPLACED_TRIES = 5


def _same_dir(path: Path, before: os.stat_result) -> bool:
    try:
        return os.path.samestat(before, os.stat(path))
    except OSError:
        return False


class ExclusiveFileLock:
    """An exclusive lock of the file ``path`` between processes and between the threads of one process, held from
    :meth:`acquire` (or ``with``) to :meth:`release`: ``flock`` on Unix, ``LockFileEx`` on Windows, through
    :class:`filelock.FileLock`. A killed holder holds nothing; the file is created when missing and stays in place.

    ``timeout``: how long to wait for another holder, in seconds (``0``: one try; ``None``: without limit). Still
    held by another at the end, the lock raises ``busy_error(busy_message)`` (``busy_error`` defaults to ``error``);
    a lock file that cannot be opened or locked raises ``error("cannot lock <what>: <reason>")``. The directory of
    ``path`` must exist, unless ``make_parent``.

    The lock counts only if that directory is still the one it was when the lock was asked for: a holder may rename
    its directory away before it lets go (and a new one take its place), and a lock of the file left in the renamed
    directory is worthless. It is then taken again (a few times, then ``busy_error``).

    Not reentrant: a second lock of the same file in the same thread waits for the first (without a limit, it raises
    ``RuntimeError`` at once instead of waiting forever). One object is for one holder at a time; :meth:`release`
    may run in any thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float | None,
        what: str,
        error: type[Exception],
        busy_error: type[Exception] | None = None,
        busy_message: str | None = None,
        make_parent: bool = False,
    ) -> None:
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
        self.path = Path(path)
        self.timeout = timeout
        self.what = what
        self._error = error
        self._busy_error = error if busy_error is None else busy_error
        self._busy_message = busy_message or (
            f"{what} is locked by another process"
            + ("" if timeout is None else f" (waited {timeout:g} s); wait for it to finish and try again")
        )
        self._make_parent = make_parent
        # fallback_to_soft=False: where the filesystem has no flock, an error, never a marker file that a killed
        # process would leave behind; preserve_lock_file: the file stays in place on Windows too, as on Unix
        self._lock = filelock.FileLock(
            self.path,
            thread_local=False,  # a lock taken in one thread may be released in another (or by a finalizer)
            fallback_to_soft=False,
            preserve_lock_file=True,
        )

    def __repr__(self) -> str:
        return f"ExclusiveFileLock({str(self.path)!r}, held={self.held})"

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock.is_locked

    def acquire(self) -> ExclusiveFileLock:
        """Take the lock (see the class docstring for the waiting and the errors); returns ``self``."""
        if self.held:
            raise RuntimeError(f"{self.what}: this lock of {self.path} is already held")
        parent = self.path.parent
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        for _ in range(_REPLACED_TRIES):
            try:
                if self._make_parent:
                    parent.mkdir(parents=True, exist_ok=True)
                before = os.stat(parent)
            except OSError as e:
                raise self._error(f"cannot lock {self.what}: {e.strerror or e}") from e
            wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._lock.acquire(timeout=wait)
            except filelock.Timeout:  # before OSError: a Timeout is a TimeoutError
                raise self._busy_error(self._busy_message) from None
            except OSError as e:
                if not _same_dir(parent, before):
                    continue  # the directory went away during the wait: try its successor
                raise self._error(f"cannot lock {self.what}: {e.strerror or e}") from e
            if _same_dir(parent, before):
                return self
            self._lock.release()  # what it locked was renamed away with its directory
        raise self._busy_error(f"{parent} keeps being replaced by another process")

    def release(self) -> None:
        """Give the lock up (nothing when it is not held)."""
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> ExclusiveFileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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


# --- append-only JSON-lines logs ---------------------------------------------------------------------------
# One torn-line policy for every log the package appends to (the registry's history, the flywheel's turns): a
# crash while a line is written leaves a last line without its newline. Reads skip it (even when it parses: it
# may be cut short), and the next append cuts it off first, so it never merges with the new line. Any other line
# that is no JSON object is damage, raised as JsonlLineError.
def append_jsonl(
    path: str | os.PathLike[str], obj: Mapping[str, Any], *, log: Any = None, allow_nan: bool = False
) -> None:
    """Append ``obj`` as one JSON line to ``path`` (created when missing) and fsync it, after cutting off a torn
    last line left by a crash (``log``, a logger, is told how many bytes). Call it under the log's own lock.
    ``allow_nan``: write NaN as ``NaN`` (not strict JSON) instead of refusing it."""
    line = (json.dumps(dict(obj), allow_nan=allow_nan) + "\n").encode()
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                fh.seek(0)
                keep = fh.read().rfind(b"\n") + 1
                if log is not None:
                    log.warning("%s: cutting off a torn last line (%d bytes)", path, size - keep)
                fh.truncate(keep)
        fh.seek(0, os.SEEK_END)
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike[str], *, log: Any = None) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every JSON object of the log ``path``, in order (none when it is missing); a
    torn last line is skipped (``log`` is told), a damaged complete line raises :class:`JsonlLineError`."""
    try:
        data = read_regular_file(path)
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if lines[-1] and log is not None:
        log.warning("%s: skipping a torn last line", path)
    out = []
    for i, raw in enumerate(lines[:-1]):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise JsonlLineError(Path(path), i + 1, f"not JSON ({e})") from None
        if not isinstance(doc, dict):
            raise JsonlLineError(Path(path), i + 1, f"a JSON {type(doc).__name__}, not an object")
        out.append((i + 1, doc))
    return out
