"""Results files on disk, by their schema: Parquet, CSV and JSON lines, written and read back with their types.

- ``.parquet`` (needs pyarrow: ``pip install 'novelty[batch]'``): one typed Arrow column per schema column;
  the schema and the run's metadata are stored in the file's key-value metadata (``novelty.schema``,
  ``novelty.run_meta``). Parquet strings are UTF-8, so lone surrogates (file names that are not valid UTF-8)
  are written as ``\\xNN`` escapes.
- ``.csv``: RFC 4180 (UTF-8, CRLF, quoted where needed); booleans ``true``/``false``; NaN and missing values
  are empty cells. Lone surrogates round trip exactly (``surrogateescape``). A text cell that a spreadsheet would
  run as a formula (it begins with = + - @ tab or CR) is written with a leading ``'``
  (:func:`~novelty.fileio.csv_text_cell`) and read back without it; number cells are never changed.
- ``.jsonl``: strict JSON, one object per row: NaN is ``null``, ±inf is ``±1e999``.

Reading types every cell by a :class:`~novelty.batch.schema.ResultSchema`: the one stored in a Parquet file,
the one passed by the caller, or the one the header's names state (:meth:`ResultSchema.from_names`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from novelty.batch.errors import ResultsDependencyError
from novelty.batch.schema import ResultSchema, fill
from novelty.fileio import csv_text_cell, csv_text_value

__all__ = ["SUPPORTED_FORMATS", "csv_header", "csv_record_value", "read_table", "utf8_safe", "write_table"]

SUPPORTED_FORMATS = (".parquet", ".csv", ".jsonl")
SCHEMA_KEY = b"novelty.schema"
RUN_META_KEY = b"novelty.run_meta"


def utf8_safe(s: str) -> str:
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
        return utf8_safe(s)


# --- writing ---------------------------------------------------------------------------------------------
def _json_value(value: Any, ensure_ascii: bool) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "null" if math.isnan(value) else ("1e999" if value > 0 else "-1e999")
    return json.dumps(value, ensure_ascii=ensure_ascii)


def _write_jsonl(path: Path, schema: ResultSchema, rows: Sequence[Mapping[str, Any]]) -> None:
    columns = schema.names
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
        return _csv_safe(csv_text_cell(value))
    return str(value)


def _write_csv(path: Path, schema: ResultSchema, rows: Sequence[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")  # CRLF: a lone \r inside a value is quoted too
        w.writerow([_csv_safe(csv_text_cell(c)) for c in schema.names])
        for row in rows:
            w.writerow([_csv_cell(row[c]) for c in schema.names])


def require_pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ResultsDependencyError(
            "Parquet results need pyarrow: pip install 'novelty[batch]' (or write .csv or .jsonl)"
        ) from None
    return pq


def _write_parquet(
    path: Path, schema: ResultSchema, rows: Sequence[Mapping[str, Any]], run_meta: Any
) -> None:
    import pyarrow as pa

    pq = require_pyarrow()
    types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    arrays = []
    for c in schema:
        values = [row[c.name] for row in rows]
        if c.kind == "str":
            values = [None if v is None else utf8_safe(v) for v in values]
        arrays.append(pa.array(values, type=types[c.kind or "str"]))
    meta = {
        RUN_META_KEY: json.dumps(run_meta, ensure_ascii=True).encode(),
        SCHEMA_KEY: json.dumps(schema.to_json(), ensure_ascii=True).encode(),
    }
    names = [utf8_safe(c) for c in schema.names]
    table = pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(meta)
    pq.write_table(table, str(path))


def write_table(
    path: Path, fmt: str, schema: ResultSchema, rows: Sequence[Mapping[str, Any]], run_meta: Any = None
) -> None:
    """Write ``rows`` (complete rows of ``schema``, see :meth:`ResultSchema.full_row`) to ``path`` (in place:
    callers write a temporary file and rename it)."""
    writers: dict[str, Callable[[], None]] = {
        "parquet": lambda: _write_parquet(path, schema, rows, run_meta),
        "csv": lambda: _write_csv(path, schema, rows),
        "jsonl": lambda: _write_jsonl(path, schema, rows),
    }
    writers[fmt]()


# --- reading ---------------------------------------------------------------------------------------------
def csv_header(header: Sequence[str]) -> list[str]:
    """The column names of a results CSV's header row, as written (see :func:`~novelty.fileio.csv_text_cell`)."""
    return [csv_text_value(c) for c in header]


def csv_record_value(cell: str, kind: str | None, col: str) -> Any:
    """One cell of a results CSV typed by its column's ``kind`` (text cells: see
    :func:`~novelty.fileio.csv_text_value`)."""
    if kind in ("str", None):
        return csv_text_value(cell)
    if cell == "":
        return math.nan if kind == "float" else None
    if kind in ("float", "int"):
        try:
            return float(cell) if kind == "float" else int(cell)
        except ValueError:
            raise ValueError(f"column {col!r}: {cell[:64]!r} is not a number") from None
    low = cell.lower()
    if low not in ("true", "false"):
        raise ValueError(f"column {col!r}: {cell!r} is not true or false")
    return low == "true"


def _header_schema(header: Sequence[str], schema: ResultSchema | None) -> ResultSchema:
    if schema is None:
        return ResultSchema.from_names(header)
    if tuple(header) != schema.names:
        raise ValueError(
            f"its columns {list(header)[:6]}… are not those of the schema {list(schema.names)[:6]}…"
        )
    return schema


def _read_csv(f: IO[str], schema: ResultSchema | None) -> list[dict[str, Any]]:
    reader = csv.reader(f)
    first = next(reader, None)
    if first is None:
        return []
    header = csv_header(first)
    s = _header_schema(header, schema)
    rows = []
    for i, line in enumerate(reader):
        if len(line) != len(header):
            raise ValueError(f"record {i + 1} has {len(line)} fields, the header {len(header)}")
        rows.append({c.name: csv_record_value(line[j], c.kind, c.name) for j, c in enumerate(s)})
    return rows


def _json_cell(value: Any, kind: str | None, col: str) -> Any:
    if kind is None:
        return value
    if value is None:
        return fill(None, kind)
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
    }[kind]
    if not ok:
        raise ValueError(f"column {col!r}: {value!r} is not a {kind}")
    return float(value) if kind == "float" else value


def _read_jsonl(f: IO[str], schema: ResultSchema | None) -> list[dict[str, Any]]:
    raw = []
    for i, line in enumerate(f):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError(f"line {i + 1} is not a JSON object")
        raw.append(row)
    if not raw:
        return []
    names: dict[str, None] = {}  # a line may lack a column (JSON lines written by hand): union, then filled
    for row in raw:
        names.update(dict.fromkeys(row))
    s = _header_schema(list(names), schema)
    return [{c.name: _json_cell(row.get(c.name), c.kind, c.name) for c in s} for row in raw]


def _read_parquet(path: Path, schema: ResultSchema | None) -> tuple[list[dict[str, Any]], Any]:
    import pyarrow as pa

    pq = require_pyarrow()
    table = pq.read_table(str(path))
    meta = table.schema.metadata or {}
    if schema is None and SCHEMA_KEY in meta:
        schema = ResultSchema.from_json(json.loads(meta[SCHEMA_KEY]))
    if schema is not None and tuple(table.column_names) != schema.names:
        raise ValueError(f"its columns {table.column_names[:6]}… are not those of its schema")
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        for c in floats:
            if row[c] is None:
                row[c] = math.nan
    run_meta = json.loads(meta[RUN_META_KEY]) if RUN_META_KEY in meta else None
    return rows, run_meta


def read_table(path: Path, fmt: str, schema: ResultSchema | None = None) -> list[dict[str, Any]]:
    """The rows of a results file, typed by its schema (raises ``ValueError``/``OSError`` on a bad file)."""
    if fmt == "parquet":
        return _read_parquet(path, schema)[0]
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return _read_csv(f, schema) if fmt == "csv" else _read_jsonl(f, schema)
