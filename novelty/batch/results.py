"""Results files of batch scoring: crash-safe chunks, resumable after ``kill -9``, one row per input.

    schema = result_schema(["knn"], head=False)
    with ResultWriter("results.parquet", schema=schema, run_meta={"detector_id": aid}) as w:
        todo = [k for k in keys if k not in w.done_keys()]
        for rows in score(todo):
            w.write(rows, stamps=...)
        w.finalize(expected_keys=keys)
    rows = read_results("results.parquet")

While a run goes on, rows go to a work directory next to the output, ``RESULTS.parts/`` (``RESULTS`` is the
output's full name, e.g. ``results.parquet.parts/``)::

    meta.json            format version, output format, the schema and run_meta (checked on resume)
    part-000001.jsonl    one file per flush: JSON lines, one row each (exact types, NaN kept), with the
    part-000002.jsonl    input's stamp (size, mtime) when the caller gave one
    .lock                flock'ed while a writer is open: two runs cannot write the same output
    .novelty-tmp-*       a file being written; a kill -9 can leave one, the next writer deletes it

Every file there is written through :mod:`novelty.fileio` (temporary name in the same directory, fsync,
``os.replace``), so a part is either complete or absent, whatever instant the process is killed at. Rows that
were only buffered are lost by a kill and simply scored again. ``finalize`` writes the output the same way
and only then removes the work directory (renamed away to ``.RESULTS.parts.trash-PID`` first, so a
half-deleted one is never resumed from; a leftover trash directory is deleted by the next writer). Once a run
has finished there is no work directory any more: running it again scores everything anew.

Rows are checked against the writer's :class:`~novelty.batch.schema.ResultSchema` (their columns and kinds;
``novelty score`` derives it from the detector) and written in its column order; file formats:
:mod:`novelty.batch.formats`. :func:`read_results` reads any of them back with the types restored.
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
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from novelty.batch.errors import (
    MissingResultsError,
    ResultsDependencyError,
    ResultsError,
    ResultsFormatError,
    ResultsLockedError,
    ResultsReadError,
    ResumeMismatchError,
)
from novelty.batch.formats import (
    SUPPORTED_FORMATS,
    _json_cell,
    csv_header,
    csv_record_value,
    read_table,
    require_pyarrow,
    write_table,
)
from novelty.batch.schema import ResultSchema
from novelty.batch.worklock import LOCK_FILE, WorkDirLock
from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import TMP_PREFIX, atomic_write, atomic_write_bytes, fsync_dir

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
    "format_of",
    "iter_result_columns",
    "read_results",
    "result_columns",
]

META_FILE = "meta.json"
PARTS_SUFFIX = ".parts"
STAMP_FIELD = "__stamp__"  # the input's stamp in a part line (schema columns never start with "__")
_LEGACY_TMP_PREFIX = ".tmp-"
_META_VERSION = 2
_PART_RE = re.compile(r"part-(\d{6,})\.jsonl\Z")


class _CorruptPartError(Exception):
    pass


def format_of(path: str | os.PathLike[str]) -> str:
    """``"parquet"``, ``"csv"`` or ``"jsonl"`` from the suffix of ``path``; :class:`ResultsFormatError` else."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_FORMATS:
        raise ResultsFormatError(
            f"{path}: unknown results format {suffix or '(no suffix)'!r}; use one of "
            + ", ".join(SUPPORTED_FORMATS)
        )
    return suffix[1:]


def start_over_hint(parts_dir: Path) -> str:
    return (
        f"to start over, delete {parts_dir} or pass --no-resume (resume=False); or write to a different --out"
    )


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


def _describe_diff(old: Any, new: Any) -> str:
    def short(v: Any) -> str:
        text = json.dumps(v, ensure_ascii=False, sort_keys=True)
        return text if len(text) <= 40 else text[:37] + "…"

    if isinstance(old, dict) and isinstance(new, dict):
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        return "differs in " + ", ".join(
            f"{k} (was {short(old.get(k))}, now {short(new.get(k))})" for k in diff
        )
    return f"was {short(old)}, now {short(new)}"


# --- the writer -----------------------------------------------------------------------------------
class ResultWriter:
    """Collects result rows in crash-safe chunks next to ``out_path`` and writes ``out_path`` at the end.

    ``schema``: the columns and their kinds (:class:`~novelty.batch.schema.ResultSchema`); ``None`` takes the
    one stored by the interrupted run being resumed, else a schema of the ``key`` column alone.
    ``resume=True`` (the default) picks up the parts an interrupted run with the same ``run_meta`` and schema
    left behind (:meth:`done_keys` says which inputs they cover, :meth:`done_stamps` with which stamps); a
    different ``run_meta`` or schema raises :class:`ResumeMismatchError`. ``resume=False`` discards them.
    ``run_meta`` is any JSON-serializable value that identifies the run, e.g. the detector's artifact id.

    Used as a context manager, a block that ends normally finalizes (unless :meth:`finalize` was already
    called), and one that raises keeps the rows written so far for a later resume.
    """

    def __init__(
        self,
        out_path: str | os.PathLike[str],
        *,
        schema: ResultSchema | None = None,
        chunk_rows: int = 512,
        resume: bool = True,
        run_meta: dict[str, Any] | None = None,
    ):
        self.out_path = Path(out_path)
        self.format = format_of(self.out_path)
        if self.format == "parquet":
            require_pyarrow()
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise InvalidInputError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
        if schema is not None and not isinstance(schema, ResultSchema):
            raise InvalidInputError(f"schema must be a ResultSchema, got {type(schema).__name__}")
        try:
            self.run_meta = json.loads(json.dumps(run_meta, sort_keys=True, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"run_meta must be JSON-serializable: {e}") from None
        if self.out_path.is_dir():
            raise ResultsError(f"{self.out_path} is a directory; --out must name a results file")
        self.schema = schema
        self.chunk_rows = chunk_rows
        self.resume = resume
        self.parts_dir = self.out_path.with_name(self.out_path.name + PARTS_SUFFIX)
        self._buffer: list[dict[str, Any]] = []
        self._done: dict[str, str | None] = {}
        self._next_part = 1
        self._closed = False
        self._finalized = False

        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        for trash in self.out_path.parent.glob(glob.escape(f".{self.parts_dir.name}.trash-") + "*"):
            shutil.rmtree(trash, ignore_errors=True)  # left by a finalize killed while deleting parts
        self._lock = WorkDirLock(self.parts_dir, self.out_path)
        try:
            self._open_parts()
        except BaseException:
            self._lock.release()
            raise

    # -- setup --
    def _open_parts(self) -> None:
        entries = [p for p in self.parts_dir.iterdir() if p.name != LOCK_FILE]
        if not self.resume:
            for p in entries:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            entries = []
        for p in entries:  # a write that a kill interrupted: never a complete file
            if p.name.startswith((TMP_PREFIX, _LEGACY_TMP_PREFIX)):
                with contextlib.suppress(OSError):
                    p.unlink()
        parts = self._part_files()
        meta_path = self.parts_dir / META_FILE
        if meta_path.exists():
            self._check_meta(meta_path)
        elif parts:
            raise ResumeMismatchError(
                f"{self.parts_dir} holds result parts but no {META_FILE}, so it cannot tell which run wrote "
                f"them; {start_over_hint(self.parts_dir)}"
            )
        else:
            if self.schema is None:
                self.schema = ResultSchema.key_only()
            meta = {
                "novelty_results": _META_VERSION,
                "output": self.out_path.name,
                "part_format": "jsonl",
                "run_meta": self.run_meta,
                "schema": self.schema.to_json(),
            }
            atomic_write_bytes(meta_path, json.dumps(meta, indent=1, sort_keys=True).encode("utf-8"))
        for number, path in parts:
            self._next_part = max(self._next_part, number + 1)
            try:
                rows = _read_part(path)
            except _CorruptPartError as e:
                self._quarantine(path, str(e))
                continue
            self._done.update((row["key"], row.get(STAMP_FIELD)) for row in rows)
        for p in self.parts_dir.glob("part-*.corrupt"):
            m = re.match(r"part-(\d+)", p.name)
            if m:
                self._next_part = max(self._next_part, int(m.group(1)) + 1)

    def _check_meta(self, meta_path: Path) -> None:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            stored = meta["run_meta"]
            version = meta["novelty_results"]
            schema = ResultSchema.from_json(meta["schema"]) if version == _META_VERSION else None
        except (OSError, ValueError, KeyError, TypeError, NoveltyError):
            raise ResumeMismatchError(
                f"{meta_path} is unreadable, so the interrupted run in {self.parts_dir} cannot be resumed; "
                + start_over_hint(self.parts_dir)
            ) from None
        if schema is None:
            raise ResumeMismatchError(
                f"{self.parts_dir} was written by another release of novelty (format {version}); "
                + start_over_hint(self.parts_dir)
            )
        if stored != self.run_meta:
            raise ResumeMismatchError(
                f"{self.parts_dir} holds the parts of an interrupted run with different settings "
                f"({_describe_diff(stored, self.run_meta)}); {start_over_hint(self.parts_dir)}"
            )
        if self.schema is not None and self.schema != schema:
            raise ResumeMismatchError(
                f"{self.parts_dir} holds the parts of an interrupted run with other result columns "
                f"({schema.describe_difference(self.schema)}); {start_over_hint(self.parts_dir)}"
            )
        self.schema = schema

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
        if self._lock.superseded:
            raise ResultsError(f"a newer ResultWriter of this process took over {self.out_path}")
        if self._finalized:
            raise ResultsError(f"the results of {self.out_path} were already finalized")
        if self._closed:
            raise ResultsError(f"this ResultWriter of {self.out_path} is closed")

    @property
    def _schema(self) -> ResultSchema:
        if self.schema is None:  # _open_parts sets it when the writer opens
            raise ResultsError(f"the ResultWriter of {self.out_path} has no schema: it was never opened")
        return self.schema

    # -- API --
    def done_keys(self) -> set[str]:
        """The keys whose rows are safely on disk: in the parts of earlier runs and in this run's flushes."""
        return set(self._done)

    def done_stamps(self) -> dict[str, str | None]:
        """``{key: stamp}`` of the rows on disk (``None`` where ``write`` got no stamp)."""
        return dict(self._done)

    def write(self, rows: Iterable[Mapping[str, Any]], *, stamps: Sequence[str] | None = None) -> None:
        """Buffer result rows (each with a str ``key``, columns of the schema); every ``chunk_rows`` rows go to
        a new part. ``stamps``: one per row, what the input was when scored (see :meth:`done_stamps`)."""
        self._check_open()
        rows = list(rows)
        if stamps is not None and len(stamps) != len(rows):
            raise InvalidInputError(f"{len(stamps)} stamps for {len(rows)} rows")
        for i, row in enumerate(rows):
            clean = self._schema.check_row(row)
            if stamps is not None:
                clean[STAMP_FIELD] = str(stamps[i])
            self._buffer.append(clean)
            if len(self._buffer) >= self.chunk_rows:
                self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one part (atomically); a no-op when nothing is buffered."""
        self._check_open()
        if not self._buffer:
            return
        data = "".join(_part_line(row) + "\n" for row in self._buffer).encode("ascii")
        atomic_write_bytes(self.parts_dir / f"part-{self._next_part:06d}.jsonl", data)
        self._next_part += 1
        self._done.update((row["key"], row.get(STAMP_FIELD)) for row in self._buffer)
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
                dups = [k for k, n in Counter(order).items() if n > 1]
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
        schema = self._schema
        table = [schema.full_row(by_key[k]) for k in order]
        atomic_write(
            self.out_path,
            lambda tmp: write_table(tmp, self.format, schema, table, self.run_meta),
            tmp_dir=self.parts_dir,
        )
        # rename first: a kill during the deletion must not leave a half-emptied parts dir to resume from
        trash = self.out_path.parent / f".{self.parts_dir.name}.trash-{os.getpid()}"
        os.replace(self.parts_dir, trash)
        fsync_dir(self.out_path.parent)
        self._finalized = True
        self._lock.release()
        shutil.rmtree(trash, ignore_errors=True)
        return self.out_path

    def close(self) -> None:
        """Write the buffered rows and release the output; the parts stay for a later resume."""
        if self._closed or self._finalized or self._lock.superseded:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._lock.release()

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
            self._lock.release()
            log.warning("could not save the buffered result rows of %s: %s", self.out_path, e)

    def __repr__(self) -> str:
        return f"ResultWriter({str(self.out_path)!r}, done={len(self._done)}, buffered={len(self._buffer)})"


# --- reading --------------------------------------------------------------------------------------
def read_results(path: str | os.PathLike[str], *, schema: ResultSchema | None = None) -> list[dict[str, Any]]:
    """The rows of a results file (``.parquet``, ``.csv`` or ``.jsonl``) with their types restored.

    Every row has every column, typed by ``schema``: by default the one stored in a Parquet file, else the
    one its column names state (those of ``novelty score``: see :func:`~novelty.batch.schema.result_schema`);
    other columns are read as the file gives them (text in CSV). Floats are floats (NaN included), ints ints,
    booleans bools.
    """
    path = Path(path)
    fmt = format_of(path)
    if path.is_dir():
        raise ResultsReadError(f"{path} is a directory, not a results file")
    if not path.is_file():
        raise ResultsReadError(f"{path}: no such results file")
    try:
        return read_table(path, fmt, schema)
    except ResultsDependencyError:
        raise
    except (OSError, ValueError, NoveltyError) as e:
        raise ResultsReadError(f"{path}: not a readable {fmt} results file ({e})") from None
    except Exception as e:  # pyarrow's errors (ArrowInvalid is a ValueError, but not all of them are)
        raise ResultsReadError(f"{path}: not a readable {fmt} results file ({e})") from None


# --- streaming -------------------------------------------------------------------------------------------
def _check_readable(path: Path) -> str:
    fmt = format_of(path)
    if path.is_dir():
        raise ResultsReadError(f"{path} is a directory, not a results file")
    if not path.is_file():
        raise ResultsReadError(f"{path}: no such results file")
    return fmt


def result_columns(path: str | os.PathLike[str]) -> list[str]:
    """The column names of a results file, read from its header (Parquet: its schema) only."""
    path = Path(path)
    fmt = _check_readable(path)
    try:
        if fmt == "parquet":
            pq = require_pyarrow()
            return list(pq.ParquetFile(str(path)).schema_arrow.names)
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            if fmt == "csv":
                return csv_header(next(csv.reader(f), []))
            names: dict[str, None] = {}
            for i, line in enumerate(f):  # JSON lines: the union of the keys of the first lines
                if line.strip():
                    row = json.loads(line)
                    names.update(dict.fromkeys(row if isinstance(row, dict) else ()))
                if i >= 100:
                    break
            return list(names)
    except ResultsDependencyError:
        raise
    except Exception as e:
        raise ResultsReadError(f"{path}: not a readable {fmt} results file ({e})") from None


def iter_result_columns(
    path: str | os.PathLike[str], columns: Sequence[str], *, batch_rows: int = 4096
) -> Iterator[dict[str, list[Any]]]:
    """Stream some columns of a results file in batches of ``batch_rows`` rows: ``{column: values}`` per batch,
    typed by the column names' kinds (:meth:`~novelty.batch.schema.ResultSchema.from_names`). Never holds more
    than one batch of rows; every column asked for must exist (:class:`ResultsReadError` otherwise)."""
    path = Path(path)
    fmt = _check_readable(path)
    have = result_columns(path)
    missing = [c for c in columns if c not in have]
    if missing:
        raise ResultsReadError(f"{path}: no column(s) {', '.join(missing)} (it has {', '.join(have[:12])}…)")
    schema = ResultSchema.from_names(list(columns))
    try:
        if fmt == "parquet":
            pq = require_pyarrow()
            for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=batch_rows, columns=list(columns)):
                data = batch.to_pydict()
                for c in columns:
                    if schema.kind(c) == "float":
                        data[c] = [math.nan if v is None else v for v in data[c]]
                yield data
            return
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            out: dict[str, list[Any]] = {c: [] for c in columns}
            if fmt == "csv":
                reader = csv.reader(f)
                header = csv_header(next(reader, []))
                pos = [header.index(c) for c in columns]
                lines: Iterator[Any] = reader
            else:
                lines = (json.loads(line) for line in f if line.strip())
            for rec in lines:
                for j, c in enumerate(columns):
                    kind = schema.kind(c)
                    if fmt == "csv":
                        out[c].append(csv_record_value(rec[pos[j]], kind, c))
                    else:
                        out[c].append(_json_cell(rec.get(c), kind, c))
                if len(out[columns[0]]) >= batch_rows:
                    yield out
                    out = {c: [] for c in columns}
            if out[columns[0]]:
                yield out
    except ResultsDependencyError:
        raise
    except (OSError, ValueError, IndexError, NoveltyError) as e:
        raise ResultsReadError(f"{path}: not a readable {fmt} results file ({e})") from None
