"""The columns of a results file and their types, stated up front instead of guessed from values.

    schema = result_schema(["knn", "autoencoder"], head=True)    # what `novelty score` writes
    schema.names    # ('key', 'path', 'member', 'bytes', …, 'error', 'alpha', 'detector_id')

A :class:`ResultSchema` is an ordered list of :class:`Column` (name, kind); kinds are ``"str"``, ``"int"``,
``"float"`` and ``"bool"``. The writer checks every row against it (an unknown column, or a value of the
wrong kind, is refused), writes the columns in its order, fills a missing value with the kind's empty value
(NaN for floats, ``""`` for text, ``None`` for ints and bools), and stores it with the parts of a run (and in
a Parquet file's metadata). Readers type CSV and JSON-lines cells by it.

The schema of ``novelty score`` (:func:`result_schema`) follows from the detector: one ``score_<name>`` and
``p_value_<name>`` per scorer, ``prediction``/``probability``/``trusted`` when it has a condition head.
Because every one of its column names says its kind, :meth:`ResultSchema.from_names` rebuilds it from a
file's header alone (other columns are then read untyped: text in CSV, JSON's own types in JSON lines).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from novelty.errors import InvalidInputError

__all__ = ["KINDS", "Column", "ResultSchema", "decode_embedding", "encode_embedding", "result_schema"]

KINDS = ("str", "int", "float", "bool")

_HEAD: tuple[tuple[str, str], ...] = (
    ("key", "str"),
    ("path", "str"),
    ("member", "str"),
    ("bytes", "int"),
    ("width", "int"),
    ("height", "int"),
    ("novelty", "float"),
    ("p_value", "float"),
    ("is_novel", "bool"),
    ("score", "float"),
)
_PREDICTION = (("prediction", "str"), ("probability", "float"), ("trusted", "bool"), ("competence", "float"))
_TAIL = (("neighbors", "str"), ("neighbor_distances", "str"), ("error", "str"))
_RUN = (("alpha", "float"), ("detector_id", "str"))
#: with ``novelty score --embeddings``: when each image was taken and its embedding (see :func:`encode_embedding`)
_EMBEDDING = (("timestamp", "float"), ("timestamp_source", "str"), ("embedding", "str"))
#: with ``novelty score --maps``: the anomaly map of each novel image as a small PNG (:mod:`novelty.batch.maps`)
_MAPS = (("anomaly_map", "str"),)
_BY_NAME = dict(_HEAD + _PREDICTION + _TAIL + _RUN + _EMBEDDING + _MAPS)
_FLOAT_PREFIXES = ("score_", "p_value_")


@dataclass(frozen=True)
class Column:
    """One column: its ``name`` and ``kind`` (one of :data:`KINDS`; ``None`` only in a schema rebuilt for
    reading, for a column whose kind nothing states)."""

    name: str
    kind: str | None


def _kind_of_name(name: str) -> str | None:
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith(_FLOAT_PREFIXES) and name not in _FLOAT_PREFIXES:
        return "float"
    return None


def result_schema(
    scorer_names: Sequence[str], *, head: bool, embeddings: bool = False, maps: bool = False
) -> ResultSchema:
    """The columns ``novelty score`` writes for a detector with these scorers (and a condition head or not):
    ``key path member bytes width height novelty p_value is_novel score``, ``score_<s> p_value_<s>`` per scorer,
    ``prediction probability trusted competence`` with a head, ``neighbors neighbor_distances error``, and the run's
    ``alpha`` and ``detector_id`` (the artifact id of the detector that scored them). With ``embeddings``
    (``novelty score --embeddings``) also ``timestamp`` (seconds since the epoch, UTC), ``timestamp_source``
    (``csv``, ``exif`` or ``mtime``) and ``embedding`` (:func:`encode_embedding`), which ``novelty drift`` reads.
    With ``maps`` (``novelty score --maps``, a detector with a patch scorer) also ``anomaly_map``."""
    cols: list[tuple[str, str]] = list(_HEAD)
    for name in scorer_names:
        cols += [(f"score_{name}", "float"), (f"p_value_{name}", "float")]
    if head:
        cols += _PREDICTION
    return ResultSchema(
        cols
        + list(_TAIL)
        + list(_RUN)
        + (list(_EMBEDDING) if embeddings else [])
        + (list(_MAPS) if maps else [])
    )


def encode_embedding(vector: np.ndarray) -> str:
    """An embedding as text: base64 of its float16 values, little-endian (2 bytes per dimension; float16
    keeps ~3 significant digits, plenty for drift tests on L2-normalised embeddings). NaN rows (unreadable
    images) give ``""``."""
    v = np.asarray(vector, dtype=np.float32).ravel()
    if not np.isfinite(v).all():
        return ""
    return base64.b64encode(v.astype("<f2").tobytes()).decode("ascii")


def decode_embedding(text: str, dim: int | None = None) -> np.ndarray | None:
    """The float16 vector of :func:`encode_embedding` (``None`` for ``""``); raises
    :class:`~novelty.errors.InvalidInputError` for text that is not one (or not of ``dim`` values)."""
    if not text:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as e:
        raise InvalidInputError(f"not an encoded embedding ({e})") from None
    if len(raw) % 2 or (dim is not None and len(raw) != 2 * dim):
        raise InvalidInputError(
            f"an encoded embedding of {len(raw)} bytes"
            + (f"; expected {2 * dim} ({dim} float16 values)" if dim else "")
        )
    return np.frombuffer(raw, dtype="<f2")


class ResultSchema:
    """An ordered list of typed columns; the first is ``key`` (text)."""

    def __init__(self, columns: Iterable[Column | tuple[str, str | None]], *, typed: bool = True) -> None:
        cols = tuple(c if isinstance(c, Column) else Column(str(c[0]), c[1]) for c in columns)
        names = [c.name for c in cols]
        if not cols or cols[0] != Column("key", "str"):
            raise InvalidInputError(
                f"a results schema starts with the column ('key', 'str'); got {names[:3]}"
            )
        if len(set(names)) != len(names):
            raise InvalidInputError(f"a results schema names each column once; got {names}")
        for c in cols:
            if not isinstance(c.name, str) or not c.name or c.name.startswith("__"):
                raise InvalidInputError(f"invalid column name {c.name!r} (empty, or starting with '__')")
            if c.kind not in KINDS and (typed or c.kind is not None):
                raise InvalidInputError(f"column {c.name!r}: kind must be one of {KINDS}, got {c.kind!r}")
        self.columns = cols
        self._kinds = {c.name: c.kind for c in cols}

    # -- construction --
    @classmethod
    def key_only(cls) -> ResultSchema:
        return cls([("key", "str")])

    @classmethod
    def from_names(cls, names: Sequence[str]) -> ResultSchema:
        """The schema of a file whose header is ``names``, typed by the naming rules of :func:`result_schema`
        (columns those rules do not know get kind ``None``: read as the file gives them)."""
        return cls([(n, _kind_of_name(n) if n != "key" else "str") for n in names], typed=False)

    @classmethod
    def from_json(cls, data: Any) -> ResultSchema:
        if not isinstance(data, list) or not all(isinstance(c, list) and len(c) == 2 for c in data):
            raise InvalidInputError(f"not a stored results schema: {str(data)[:80]!r}")
        return cls([(str(n), k) for n, k in data])

    def to_json(self) -> list[list[Any]]:
        return [[c.name, c.kind] for c in self.columns]

    # -- access --
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def kind(self, name: str) -> str | None:
        return self._kinds[name]

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ResultSchema) and self.columns == other.columns

    def __hash__(self) -> int:
        return hash(self.columns)

    def __repr__(self) -> str:
        return "ResultSchema(" + ", ".join(f"{c.name}:{c.kind}" for c in self.columns) + ")"

    def describe_difference(self, other: ResultSchema) -> str:
        """What differs between two schemas, in words (for resume errors)."""
        mine, theirs = dict(self._kinds), dict(other._kinds)
        parts = []
        if gone := [n for n in mine if n not in theirs]:
            parts.append("columns only in the first: " + ", ".join(gone))
        if new := [n for n in theirs if n not in mine]:
            parts.append("columns only in the second: " + ", ".join(new))
        if changed := [
            f"{n} ({mine[n]} → {theirs[n]})" for n in mine if n in theirs and mine[n] != theirs[n]
        ]:
            parts.append("kinds changed: " + ", ".join(changed))
        return "; ".join(parts) or "the column order differs"

    # -- values --
    def check_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A row with every value a plain ``str``/``int``/``float``/``bool``/``None`` of its column's kind;
        raises :class:`~novelty.errors.InvalidInputError` for an unknown column or a value of another kind."""
        if not isinstance(row, Mapping):
            raise InvalidInputError(f"a result row must be a dict, got {type(row).__name__}")
        key = row.get("key")
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"a result row needs a non-empty str 'key', got {key!r}")
        out: dict[str, Any] = {}
        for col, value in row.items():
            if not isinstance(col, str):
                raise InvalidInputError(f"result row {key!r}: column names must be str, got {col!r}")
            v = _plain(value, col, key)
            if col not in self._kinds:
                raise InvalidInputError(
                    f"result row {key!r}: column {col!r} is not in the results schema ({', '.join(self.names)})"
                )
            out[col] = _check_kind(v, self._kinds[col], col, key)
        return out

    def full_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``row`` with every column of the schema, in its order; a missing value becomes the kind's empty
        value (NaN, ``""``, or ``None`` for ints and bools)."""
        return {c.name: fill(row.get(c.name), c.kind) for c in self.columns}


def fill(value: Any, kind: str | None) -> Any:
    """A cell of the given kind, a missing one (``None``) replaced by NaN (float) or ``""`` (str)."""
    if kind == "float":
        return math.nan if value is None else float(value)
    if kind == "str" and value is None:
        return ""
    return value


def _plain(value: Any, col: str, key: Any) -> Any:
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


def _check_kind(v: Any, kind: str | None, col: str, key: Any) -> Any:
    if v is None or kind is None:
        return v
    got = "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else type(v).__name__
    if kind == "float" and got in ("int", "float"):
        return float(v)
    if got != kind:
        raise InvalidInputError(
            f"result row {key!r}, column {col!r}: {got} value, the results schema says {kind}"
        )
    return v
