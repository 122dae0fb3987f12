"""Results files of batch scoring: crash-safe chunks, resumable after ``kill -9``, one row per input.

    with ResultWriter("results.parquet", run_meta={"detector": fingerprint, "inputs": inputs_hash}) as w:
        todo = [k for k in keys if k not in w.done_keys()]
        for rows in score(todo):
            w.write(rows)
        w.finalize(expected_keys=keys)
    rows = read_results("results.parquet")

While a run goes on, rows go to a work directory next to the output, ``RESULTS.parts/`` (``RESULTS`` is the
output's full name, e.g. ``results.parquet.parts/``)::

    meta.json            format version, output format and run_meta (checked on resume)
    part-000001.jsonl    one file per flush: JSON lines, one row each (exact types, NaN kept)
    part-000002.jsonl
    .lock                flock'ed while a writer is open: two runs cannot write the same output
    .tmp-*               a file being written; a kill -9 can leave one, the next writer deletes it

Every file there is written to a temporary name in the same directory, flushed, fsync'ed and renamed with
``os.replace``, so a part is either complete or absent, whatever instant the process is killed at. Rows that
were only buffered are lost by a kill and simply scored again. ``finalize`` writes the output the same way
and only then removes the work directory (renamed away to ``.RESULTS.parts.trash-PID`` first, so a
half-deleted one is never resumed from; a leftover trash directory is deleted by the next writer). Once a run
has finished there is no work directory any more: running it again scores everything anew.

Formats, by the output's suffix: ``.parquet`` (needs pyarrow: ``pip install 'novelty[batch]'``), ``.csv``
(RFC 4180: UTF-8, CRLF, quoted where needed; booleans ``true``/``false``; NaN and missing values are empty
cells) and ``.jsonl`` (strict JSON: NaN is ``null``, ±inf is ``±1e999``). :func:`read_results` reads any of
them back with the types restored. Columns are the union over all rows; a row that lacks a column gets NaN
(float columns), ``""`` (text columns) or ``None`` (int and bool columns).

Strings with lone surrogates (file names that are not valid UTF-8, decoded with ``surrogateescape``) round
trip exactly through CSV and JSON lines; Parquet strings must be UTF-8, so there they are written with
``\\xNN`` escapes.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import logging
import math
import os
import re
import secrets
import shutil
import sys
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from novelty.errors import InvalidInputError, NoveltyError

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_FORMATS",
    "MissingResultsError",
    "ResultWriter",
    "ResultsDependencyError",
    "ResultsError",
    "ResultsFormatError",
    "ResultsLockedError",
    "ResultsReadError",
    "ResumeMismatchError",
    "read_results",
]

SUPPORTED_FORMATS = (".parquet", ".csv", ".jsonl")
META_FILE = "meta.json"
LOCK_FILE = ".lock"
PARTS_SUFFIX = ".parts"
_TMP_PREFIX = ".tmp-"
_META_VERSION = 1
_PART_RE = re.compile(r"part-(\d{6,})\.jsonl\Z")
# the writer of this process that holds each work directory's lock: a newer writer of the same output takes
# it over (an old one kept alive by a traceback or a notebook variable must not lock its output forever)
_HOLDERS: dict[str, weakref.ref[ResultWriter]] = {}

# The columns of `novelty score` whose type is known without looking at values (used to read CSV back and
# to type a column that holds no value at all).
_STR_COLUMNS = frozenset({"key", "path", "member", "error", "prediction", "neighbors", "neighbor_distances"})
_INT_COLUMNS = frozenset({"bytes", "width", "height"})
_BOOL_COLUMNS = frozenset({"is_novel", "trusted"})
_FLOAT_COLUMNS = frozenset({"novelty", "p_value", "score", "probability"})
_FLOAT_PREFIXES = ("score_", "p_value_")


# --- errors ---------------------------------------------------------------------------------------
class ResultsError(NoveltyError):
    """A results file or its work directory could not be written or read."""


class ResultsFormatError(ResultsError, ValueError):
    """The output path has a suffix that is not a supported results format."""


class ResultsDependencyError(ResultsError, ImportError):
    """The format needs a package that is not installed; the message says what to install."""


class ResumeMismatchError(ResultsError):
    """The work directory holds the parts of an interrupted run with different settings."""


class ResultsLockedError(ResultsError):
    """Another writer (another process, or an unclosed ResultWriter) is writing the same output."""


class MissingResultsError(ResultsError):
    """``finalize`` was asked for keys that have no row; ``missing`` lists them all."""

    def __init__(self, missing: Sequence[str], n_expected: int, parts_dir: Path):
        self.missing = list(missing)
        shown = ", ".join(repr(k) for k in self.missing[:5])
        more = f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else ""
        super().__init__(
            f"{len(self.missing)} of {n_expected} inputs have no result row: {shown}{more}; "
            f"the rows written so far are kept in {parts_dir}, run again to score the rest"
        )


class ResultsReadError(ResultsError):
    """A results file is missing, truncated or not in the format its suffix says."""


class _CorruptPartError(Exception):
    pass


# --- values and column kinds ----------------------------------------------------------------------
def _normalize(value: Any, col: str, key: Any) -> Any:
    """A plain Python bool/int/float/str/None for one cell (numpy scalars included)."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return str(value)
    raise InvalidInputError(
        f"result row {key!r}, column {col!r}: {type(value).__name__} is not a bool, int, float, str or None"
    )


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def _merge_kinds(a: str | None, b: str | None) -> str | None:
    """The kind of a column holding both; raises ValueError if they cannot share one."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if {a, b} == {"int", "float"}:
        return "float"
    raise ValueError(f"{a} and {b}")


def _known_kind(col: str) -> str | None:
    if col in _STR_COLUMNS:
        return "str"
    if col in _INT_COLUMNS:
        return "int"
    if col in _BOOL_COLUMNS:
        return "bool"
    if col in _FLOAT_COLUMNS or col.startswith(_FLOAT_PREFIXES):
        return "float"
    return None


def _fill(value: Any, kind: str | None) -> Any:
    """A cell converted to its column's kind; a missing one becomes NaN, "" or None."""
    if kind == "float":
        return math.nan if value is None else float(value)
    if kind == "str" and value is None:
        return ""
    return value


def _column_kinds(rows: Sequence[Mapping[str, Any]], what: str) -> dict[str, str | None]:
    """Columns in order of first appearance, each with the kind of its values."""
    kinds: dict[str, str | None] = {}
    for row in rows:
        for col, value in row.items():
            try:
                kinds[col] = _merge_kinds(kinds.get(col), _kind(value))
            except ValueError as e:
                raise ResultsError(f"{what}: column {col!r} mixes {e} values") from None
    return {col: kind if kind is not None else _known_kind(col) for col, kind in kinds.items()}


def _utf8_safe(s: str) -> str:
    """``s`` if it encodes to UTF-8, else with its lone surrogates written as ``\\xNN`` escapes."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        try:
            raw = s.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = s.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "backslashreplace")


def _csv_safe(s: str) -> str:
    """``s`` if the CSV file's encoding (UTF-8 + surrogateescape) can write it, else escaped."""
    try:
        s.encode("utf-8", "surrogateescape")
        return s
    except UnicodeEncodeError:
        return _utf8_safe(s)


# --- files ----------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported everywhere (Windows, some network filesystems)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, write: Callable[[Path], object], tmp_dir: Path | None = None) -> None:
    """Write ``path`` so that it is either complete or absent: temp file, fsync, ``os.replace``."""
    tmp_dir = path.parent if tmp_dir is None else tmp_dir
    for _ in range(100):
        tmp = tmp_dir / f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}"
        try:  # not tempfile.mkstemp: its files are 0600, this one gets the umask's permissions
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    else:
        raise ResultsError(f"cannot create a temporary file in {tmp_dir}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _read_part(path: Path) -> list[dict[str, Any]]:
    """The rows of one part file; raises _CorruptPartError if it is not a complete part."""
    try:
        raw = path.read_bytes()
        if not raw.endswith(b"\n"):
            raise ValueError("it does not end with a complete line")
        rows = [json.loads(line) for line in raw.decode("ascii").splitlines()]
    except (OSError, ValueError) as e:
        raise _CorruptPartError(str(e)) from None
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("key"), str):
            raise _CorruptPartError("a line is not a result row with a key")
    return rows


def _part_line(row: Mapping[str, Any]) -> str:
    # ASCII (lone surrogates survive as \udcxx escapes); NaN/Infinity kept as JSON extensions: exact types
    return json.dumps(row, ensure_ascii=True, allow_nan=True, separators=(",", ":"))


def _require_pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ResultsDependencyError(
            "Parquet results need pyarrow: pip install 'novelty[batch]' (or write .csv or .jsonl)"
        ) from None
    return pq


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_FORMATS:
        raise ResultsFormatError(
            f"{path}: unknown results format {suffix or '(no suffix)'!r}; use one of "
            + ", ".join(SUPPORTED_FORMATS)
        )
    return suffix[1:]


# --- writing the final file -----------------------------------------------------------------------
def _json_value(value: Any, ensure_ascii: bool) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "null" if math.isnan(value) else ("1e999" if value > 0 else "-1e999")
    return json.dumps(value, ensure_ascii=ensure_ascii)


def _write_jsonl(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    with open(path, "wb") as f:
        for row in rows:
            line = "{" + ",".join(
                json.dumps(c, ensure_ascii=False) + ":" + _json_value(row[c], False) for c in columns
            )
            try:
                data = (line + "}\n").encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: \udcxx escapes (valid JSON, exact round trip)
                line = "{" + ",".join(json.dumps(c) + ":" + _json_value(row[c], True) for c in columns)
                data = (line + "}\n").encode("utf-8")
            f.write(data)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, str):
        return _csv_safe(value)
    return str(value)


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")  # CRLF: a lone \r inside a value is quoted too
        w.writerow([_csv_safe(c) for c in columns])
        for row in rows:
            w.writerow([_csv_cell(row[c]) for c in columns])


def _write_parquet(
    path: Path,
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    kinds: Mapping[str, str | None],
    run_meta: Any,
) -> None:
    import pyarrow as pa

    pq = _require_pyarrow()
    types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    arrays = []
    for c in columns:
        values = [row[c] for row in rows]
        if kinds[c] == "str":
            values = [None if v is None else _utf8_safe(v) for v in values]
        arrays.append(pa.array(values, type=types.get(kinds[c] or "", pa.null())))
    names = [_utf8_safe(c) for c in columns]
    meta = {b"novelty.run_meta": json.dumps(run_meta, ensure_ascii=True).encode()}
    table = pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(meta)
    pq.write_table(table, str(path))


# --- the writer -----------------------------------------------------------------------------------
class ResultWriter:
    """Collects result rows in crash-safe chunks next to ``out_path`` and writes ``out_path`` at the end.

    ``resume=True`` (the default) picks up the parts an interrupted run with the same ``run_meta`` left
    behind (:meth:`done_keys` says which inputs they cover); a different ``run_meta`` raises
    :class:`ResumeMismatchError`. ``resume=False`` discards them. ``run_meta`` is any JSON-serializable value
    that identifies the run, e.g. the detector's fingerprint and a hash of the input list.

    Used as a context manager, a block that ends normally finalizes (unless :meth:`finalize` was already
    called), and one that raises keeps the rows written so far for a later resume.
    """

    def __init__(
        self,
        out_path: str | os.PathLike[str],
        *,
        chunk_rows: int = 512,
        resume: bool = True,
        run_meta: dict[str, Any] | None = None,
    ):
        self.out_path = Path(out_path)
        self.format = _format_of(self.out_path)
        if self.format == "parquet":
            _require_pyarrow()
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise InvalidInputError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
        try:
            self.run_meta = json.loads(json.dumps(run_meta, sort_keys=True, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"run_meta must be JSON-serializable: {e}") from None
        self.chunk_rows = chunk_rows
        self.resume = resume
        self.parts_dir = self.out_path.with_name(self.out_path.name + PARTS_SUFFIX)
        self._buffer: list[dict[str, Any]] = []
        self._done: set[str] = set()
        self._kinds: dict[str, str | None] = {}
        self._next_part = 1
        self._lock_fd: int | None = None
        self._lock_release: weakref.finalize | None = None
        self._lock_ident = ""
        self._closed = False
        self._finalized = False
        self._superseded = False

        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        for trash in self.out_path.parent.glob(glob.escape(f".{self.parts_dir.name}.trash-") + "*"):
            shutil.rmtree(trash, ignore_errors=True)  # left by a finalize killed while deleting parts
        self._lock()
        try:
            self._open_parts()
        except BaseException:
            self._unlock()
            raise

    # -- setup --
    def _lock(self) -> None:
        ident = os.path.realpath(self.parts_dir)
        holder = _HOLDERS.get(ident)
        old = holder() if holder is not None else None
        if old is not None and old._lock_fd is not None:
            old._superseded = True  # its buffered rows are dropped, as by a crash, and it refuses more work
            old._unlock()
        lock_path = self.parts_dir / LOCK_FILE
        for _ in range(5):
            self.parts_dir.mkdir(exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            if sys.platform == "win32":
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise ResultsLockedError(
                    f"{self.out_path} is being written by another process; "
                    "wait for it or use a different --out"
                ) from None
            try:  # a finalize elsewhere may have renamed the directory away between the open and the flock
                if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            raise ResultsLockedError(f"{self.parts_dir} keeps being replaced by another process")
        self._lock_fd = fd
        self._lock_release = weakref.finalize(self, os.close, fd)  # a writer dropped unclosed frees it too
        _HOLDERS[ident] = weakref.ref(self)
        self._lock_ident = ident

    def _unlock(self) -> None:
        if self._lock_release is not None:
            self._lock_release()  # closes the descriptor, which releases the flock
            self._lock_release = None
            self._lock_fd = None
            holder = _HOLDERS.get(self._lock_ident)
            if holder is not None and holder() is self:
                del _HOLDERS[self._lock_ident]

    def _open_parts(self) -> None:
        entries = [p for p in self.parts_dir.iterdir() if p.name != LOCK_FILE]
        if not self.resume:
            for p in entries:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            entries = []
        for p in entries:
            if p.name.startswith(_TMP_PREFIX):  # a write that a kill interrupted: never a complete file
                with contextlib.suppress(OSError):
                    p.unlink()
        parts = self._part_files()
        meta_path = self.parts_dir / META_FILE
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                stored = meta["run_meta"]
            except (OSError, ValueError, KeyError, TypeError):
                raise ResumeMismatchError(
                    f"{meta_path} is unreadable, so the interrupted run in {self.parts_dir} "
                    "cannot be resumed; "
                    "use --no-resume (resume=False) to start over, or a different --out"
                ) from None
            if stored != self.run_meta:
                raise ResumeMismatchError(
                    f"{self.parts_dir} holds the parts of an interrupted run with different settings "
                    f"({_describe_diff(stored, self.run_meta)}); use --no-resume (resume=False) to discard "
                    "them and start over, or a different --out"
                )
        elif parts:
            raise ResumeMismatchError(
                f"{self.parts_dir} holds result parts but no {META_FILE}, "
                "so it cannot tell which run wrote them; "
                "use --no-resume (resume=False) to discard them, or a different --out"
            )
        else:
            meta = {
                "novelty_results": _META_VERSION,
                "output": self.out_path.name,
                "part_format": "jsonl",
                "run_meta": self.run_meta,
            }
            _atomic_write_bytes(meta_path, json.dumps(meta, indent=1, sort_keys=True).encode("utf-8"))
        for number, path in parts:
            self._next_part = max(self._next_part, number + 1)
            try:
                rows = _read_part(path)
            except _CorruptPartError as e:
                self._quarantine(path, str(e))
                continue
            try:
                kinds = _column_kinds(rows, str(path))
                for col, kind in kinds.items():
                    self._kinds[col] = _merge_kinds(self._kinds.get(col), kind)
            except (ResultsError, ValueError) as e:
                raise ResumeMismatchError(
                    f"the parts in {self.parts_dir} do not agree on column types ({e}); "
                    "use --no-resume (resume=False) to start over"
                ) from None
            self._done.update(row["key"] for row in rows)
        for p in self.parts_dir.glob("part-*.corrupt"):
            m = re.match(r"part-(\d+)", p.name)
            if m:
                self._next_part = max(self._next_part, int(m.group(1)) + 1)

    def _part_files(self) -> list[tuple[int, Path]]:
        parts = []
        for p in self.parts_dir.iterdir():
            m = _PART_RE.match(p.name)
            if m:
                parts.append((int(m.group(1)), p))
        return sorted(parts)

    def _quarantine(self, path: Path, why: str) -> None:
        log.warning("dropping the damaged result part %s (%s); its inputs will be scored again", path, why)
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(path.name + ".corrupt"))

    def _check_open(self) -> None:
        if self._superseded:
            raise ResultsError(f"a newer ResultWriter of this process took over {self.out_path}")
        if self._finalized:
            raise ResultsError(f"the results of {self.out_path} were already finalized")
        if self._closed:
            raise ResultsError(f"this ResultWriter of {self.out_path} is closed")

    # -- API --
    def done_keys(self) -> set[str]:
        """The keys whose rows are safely on disk: in the parts of earlier runs and in this run's flushes."""
        return set(self._done)

    def write(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Buffer result rows (each with a str ``key``); every ``chunk_rows`` rows go to a new part."""
        self._check_open()
        for row in rows:
            if not isinstance(row, Mapping):
                raise InvalidInputError(f"a result row must be a dict, got {type(row).__name__}")
            key = row.get("key")
            if not isinstance(key, str) or not key:
                raise InvalidInputError(f"a result row needs a non-empty str 'key', got {key!r}")
            clean: dict[str, Any] = {}
            kinds = dict(self._kinds)
            for col, value in row.items():
                if not isinstance(col, str):
                    raise InvalidInputError(f"result row {key!r}: column names must be str, got {col!r}")
                v = _normalize(value, col, key)
                try:
                    kinds[col] = _merge_kinds(kinds.get(col), _kind(v))
                except ValueError:
                    raise InvalidInputError(
                        f"result row {key!r}, column {col!r}: {_kind(v)} value, "
                        f"earlier rows have {kinds[col]} values"
                    ) from None
                clean[col] = v
            self._kinds = kinds
            self._buffer.append(clean)
            if len(self._buffer) >= self.chunk_rows:
                self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one part (atomically); a no-op when nothing is buffered."""
        self._check_open()
        if not self._buffer:
            return
        data = "".join(_part_line(row) + "\n" for row in self._buffer).encode("ascii")
        path = self.parts_dir / f"part-{self._next_part:06d}.jsonl"
        _atomic_write_bytes(path, data)
        self._next_part += 1
        self._done.update(row["key"] for row in self._buffer)
        self._buffer = []

    def finalize(self, expected_keys: Sequence[str] | None = None) -> Path:
        """Write ``out_path`` from all parts (the last row of a key wins) and remove the work directory.

        With ``expected_keys`` the file has exactly those rows, in that order: keys without a row raise
        :class:`MissingResultsError` (the parts are kept for a resume), rows of other keys are dropped with a
        warning. Without it the rows are ordered by key.
        """
        self._check_open()
        self.flush()
        by_key: dict[str, dict[str, Any]] = {}
        for _, path in self._part_files():
            try:
                rows = _read_part(path)
            except _CorruptPartError as e:
                self._quarantine(path, str(e))
                continue
            for row in rows:
                by_key[row["key"]] = row
        if expected_keys is not None:
            order = list(expected_keys)
            if len(set(order)) != len(order):
                counts = Counter(order)
                dups = [k for k, n in counts.items() if n > 1]
                raise InvalidInputError(f"expected_keys has duplicates, e.g. {dups[:3]}")
            missing = [k for k in order if k not in by_key]
            if missing:
                raise MissingResultsError(missing, len(order), self.parts_dir)
            expected = set(order)
            extra = [k for k in by_key if k not in expected]
            if extra:
                log.warning(
                    "%s: dropping %d result rows whose keys are not among the inputs, e.g. %r",
                    self.out_path,
                    len(extra),
                    extra[:3],
                )
        else:
            order = sorted(by_key)
        rows = [by_key[k] for k in order]
        kinds = _column_kinds(rows, str(self.parts_dir)) if rows else {"key": "str"}
        columns = list(kinds)
        table = [{c: _fill(row.get(c), kinds[c]) for c in columns} for row in rows]

        def write_final(tmp: Path) -> None:
            if self.format == "parquet":
                _write_parquet(tmp, columns, table, kinds, self.run_meta)
            elif self.format == "csv":
                _write_csv(tmp, columns, table)
            else:
                _write_jsonl(tmp, columns, table)

        _atomic_write(self.out_path, write_final, tmp_dir=self.parts_dir)
        # rename first: a kill during the deletion must not leave a half-emptied parts dir to resume from
        trash = self.out_path.parent / f".{self.parts_dir.name}.trash-{os.getpid()}"
        os.replace(self.parts_dir, trash)
        _fsync_dir(self.out_path.parent)
        self._finalized = True
        self._unlock()
        shutil.rmtree(trash, ignore_errors=True)
        return self.out_path

    def close(self) -> None:
        """Write the buffered rows and release the output; the parts stay for a later resume."""
        if self._closed or self._finalized or self._superseded:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._unlock()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            if not (self._finalized or self._closed):
                self.finalize()
            return
        try:  # the buffered rows are complete results: keep them for the resume
            self.close()
        except Exception as e:
            self._closed = True
            self._unlock()
            log.warning("could not save the buffered result rows of %s: %s", self.out_path, e)

    def __repr__(self) -> str:
        return f"ResultWriter({str(self.out_path)!r}, done={len(self._done)}, buffered={len(self._buffer)})"


def _describe_diff(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        return "differs in " + ", ".join(diff)
    return f"was {old!r}, now {new!r}"


# --- reading --------------------------------------------------------------------------------------
_INT_RE = re.compile(r"[+-]?\d+\Z")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z|[+-]?(nan|inf|infinity)\Z", re.IGNORECASE)


def _csv_kind(col: str, cells: Sequence[str]) -> str | None:
    known = _known_kind(col)
    if known is not None:
        return known
    values = [c for c in cells if c != ""]
    if not values:
        return None
    if all(v.lower() in ("true", "false") for v in values):
        return "bool"
    if all(_INT_RE.match(v) for v in values):
        return "int"
    if all(_FLOAT_RE.match(v) for v in values):
        return "float"
    return "str"


def _csv_value(cell: str, kind: str | None, col: str) -> Any:
    if kind == "str":
        return cell
    if kind == "float":
        return math.nan if cell == "" else float(cell)
    if cell == "" or kind is None:
        return None
    if kind == "int":
        return int(cell)
    low = cell.lower()
    if low not in ("true", "false"):
        raise ValueError(f"column {col!r}: {cell!r} is not true or false")
    return low == "true"


def _read_csv(f: IO[str]) -> list[dict[str, Any]]:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
        return []
    lines = list(reader)
    for i, line in enumerate(lines):
        if len(line) != len(header):
            raise ValueError(f"record {i + 1} has {len(line)} fields, the header {len(header)}")
    kinds = [_csv_kind(col, [line[j] for line in lines]) for j, col in enumerate(header)]
    return [{col: _csv_value(line[j], kinds[j], col) for j, col in enumerate(header)} for line in lines]


def _read_jsonl(f: IO[str]) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(f):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError(f"line {i + 1} is not a JSON object")
        rows.append(row)
    kinds = _column_kinds(rows, "results")
    return [{c: _fill(row.get(c), kinds[c]) for c in kinds} for row in rows]


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa

    pq = _require_pyarrow()
    table = pq.read_table(str(path))
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        for c in floats:
            if row[c] is None:
                row[c] = math.nan
    return rows


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a results file (``.parquet``, ``.csv`` or ``.jsonl``) with their types restored.

    Every row has every column; floats are floats (NaN included), ints ints, booleans bools. CSV keeps no
    types: the columns of ``novelty score`` get theirs by name, other columns by their values.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise ResultsReadError(f"{path}: no such results file")
    try:
        if fmt == "parquet":
            return _read_parquet(path)
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            return _read_csv(f) if fmt == "csv" else _read_jsonl(f)
    except ResultsDependencyError:
        raise
    except (OSError, ValueError, ResultsError, csv.Error) as e:
        raise ResultsReadError(f"{path}: not a readable {fmt} results file ({e})") from None
    except Exception as e:  # pyarrow's errors (ArrowInvalid is a ValueError, but not all of them are)
        raise ResultsReadError(f"{path}: not a readable {fmt} results file ({e})") from None
