"""Hostile values into every public entry point that reads user input: whatever is raised is a
:class:`~novelty.errors.NoveltyError` (a successful return is fine, and is then checked to be sane).

Hostile: huge, negative, NaN and infinite numbers (and integers past 4300 digits); times outside 1900–2199 UTC
(year 9999 at −05:00, year 1 at +05:00, 1e300 seconds); lone surrogates; nesting 100 000 levels deep; the wrong
type (a string where a list belongs and the other way round); annotation ids that mix int and str.

Each test runs a fixed number of examples (``derandomize=True``: the same examples on every machine, no example
database) and asserts that it ran them; ``pytest -s`` prints the counts. The whole file takes seconds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import pytest
from hardening_support import small_image  # tests/hardening_support.py
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from novelty.batch.timestamps import parse_timestamp
from novelty.clock import MAX_TIME, MIN_TIME, parse_time
from novelty.errors import NoveltyError
from novelty.flywheel.dataset import Dataset, Entry

EXAMPLES = 150  # per entry point
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
_ran: dict[str, int] = {}
_returned: dict[str, int] = {}  # of those, how many returned (the rest raised a NoveltyError)


def _examples(run: Callable[[], None], name: str) -> int:
    """Run a hypothesis-decorated function; how many examples it fed its entry point."""
    _ran[name] = _returned[name] = 0
    run()
    print(f"{name}: {_ran[name]} examples, {_returned[name]} returned, the others raised a NoveltyError")
    return _ran[name]


def _novelty_errors_only(name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``; a NoveltyError is an answer (its message must be printable), anything else fails."""
    _ran[name] = _ran.get(name, 0) + 1
    try:
        out = call(*args, **kwargs)
    except NoveltyError as e:
        assert str(e)
        return None
    _returned[name] = _returned.get(name, 0) + 1
    return out


# --- hostile values --------------------------------------------------------------------------------------------
def _deep_list(n: int) -> list:
    x: list = []
    for _ in range(n):
        x = [x]
    return x


def _deep_dict(n: int) -> dict:
    x: dict = {}
    for _ in range(n):
        x = {"a": x}
    return x


def _power(sign: int, digits: int) -> int:
    return sign * 10**digits


def _times(text: str, n: int) -> str:
    return text * n


def _number_text(x: float) -> str:
    """How a number is written, also past Python's 4300-digit limit of ``str(int)``."""
    if isinstance(x, float):
        return repr(x)
    return str(x) if abs(x) < 10**4000 else ("-" if x < 0 else "") + "1" + "0" * 5000


# built once, drawn by index: hypothesis shows a strategy by its repr (and derives its fixed seed from it), and
# these values have none
_DEEP = (_deep_list(100_000), _deep_dict(100_000))


def _deep(i: int) -> Any:
    return _DEEP[i]


DEEP = st.sampled_from([0, 1]).map(_deep)
HUGE = st.builds(_power, st.sampled_from([1, -1]), st.sampled_from([400, 5000]))
SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=4)
TEXT = st.one_of(
    st.text(max_size=20),
    SURROGATES,
    st.tuples(st.text(max_size=5), SURROGATES, st.text(max_size=5)).map("".join),
    st.sampled_from(["", " ", "\x00", "\n", "=1+2", "../../../../etc/passwd"]),
    st.builds(_times, st.sampled_from(["x", "9", "\ud800"]), st.just(5000)),
)
NUMBERS = st.one_of(
    st.integers(),
    HUGE,
    st.sampled_from([2**63, -(2**63) - 1]),
    st.floats(),  # NaN and ±inf included
    st.sampled_from([1e300, -1e300, 1e-320, -0.0, 253_402_318_800.0, -62_135_596_800.0]),
)
OFFSETS = st.sampled_from(
    [timezone.utc, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
)
DATETIMES = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), OFFSETS)),
    st.sampled_from(
        [
            datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))),
            datetime.min.replace(tzinfo=timezone(timedelta(hours=5))),
            datetime(1899, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
            datetime(2200, 1, 1, tzinfo=timezone.utc),
        ]
    ),
)
TIME_TEXT = st.one_of(
    st.sampled_from(
        [
            "9999-12-31T23:59:59-05:00",
            "0001-01-01T00:00:00+05:00",
            "10000-01-01T00:00:00Z",
            "1899-12-31T23:59:59Z",
            "2200-01-01T00:00:00Z",
            "2199-12-31T23:59:59Z",
            "1900-01-01T00:00:00+00:00",
            "2026-02-30T00:00:00Z",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00\ud800",
            "nan",
            "inf",
            "-inf",
            "1e300",
            "-1e300",
            "1e999",
            "0x10",
            "1_700_000_000",
            "٢٠٢٦-٠١-٠١",
        ]
    ),
    DATETIMES.map(lambda d: d.isoformat()),
    NUMBERS.map(_number_text),
)


class _Opaque:
    """An object of no type the package knows, with a repr that is the same in every process."""

    def __repr__(self) -> str:
        return "_Opaque()"


WRONG_TYPES = st.sampled_from(
    [b"2026-01-01", bytearray(b"x"), _Opaque(), frozenset({1, 2}), (), [], {}, ["2026-01-01"], 1j]
)
HOSTILE = st.one_of(
    st.none(), st.booleans(), NUMBERS, TEXT, TIME_TEXT, DATETIMES, WRONG_TYPES, DEEP,
    st.lists(st.one_of(NUMBERS, TEXT), max_size=3),
    st.dictionaries(st.text(max_size=3), st.one_of(NUMBERS, TEXT), max_size=3),
)  # fmt: skip


def _sane_time(t: datetime | None) -> None:
    assert t is None or (t.tzinfo is not None and MIN_TIME <= t < MAX_TIME)


# --- the clock ---------------------------------------------------------------------------------------------------
def test_parse_time():
    @given(value=HOSTILE)
    @example(value="9999-12-31T23:59:59-05:00")
    @example(value="0001-01-01T00:00:00+05:00")
    @example(value=datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))))
    @example(value="2026-01-01T00:00:00\ud800")
    @example(value=_DEEP[0])
    @example(value=10**5000)
    @SETTINGS
    def run(value):
        _sane_time(_novelty_errors_only("parse_time", parse_time, value, "since"))

    assert _examples(run, "parse_time") >= EXAMPLES


def test_parse_timestamp():
    @given(value=st.one_of(TIME_TEXT, HOSTILE))
    @example(value="9999-12-31T23:59:59-05:00")
    @example(value="0001-01-01T00:00:00+05:00")
    @example(value="1e300")
    @example(value=1e300)
    @example(value=10**5000)
    @example(value=_DEEP[1])
    @SETTINGS
    def run(value):
        t = _novelty_errors_only("parse_timestamp", parse_timestamp, value)
        assert t is None or (math.isfinite(t) and MIN_TIME.timestamp() <= t < MAX_TIME.timestamp())

    assert _examples(run, "parse_timestamp") >= EXAMPLES


# --- the labelled dataset ----------------------------------------------------------------------------------------
SHA = "ab" * 32


def _field(valid: Any, hostile: st.SearchStrategy = HOSTILE) -> st.SearchStrategy:
    """``valid`` about five times in six, else a hostile value: with several arguments, most examples spoil one
    or two of them, and some spoil none (the call must then succeed or raise a NoveltyError all the same)."""
    return st.tuples(st.integers(0, 5), hostile).map(lambda t: t[1] if t[0] == 5 else valid)


def _entry(**fields: Any) -> dict[str, Any]:
    return {
        "id": "e1",
        "sha256": SHA,
        "path": "/data/img.png",
        "label": "dry",
        "source": "test",
        "labeller": "human:x",
        "time": "2026-01-01T00:00:00Z",
        "version": 0,
        "group": None,
        "condition": None,
        "auto": False,
        **fields,
    }


def test_dataset_add():
    @given(
        fields=st.fixed_dictionaries(
            {
                "id": _field("e1"),
                "sha256": _field(SHA),
                "path": _field("/data/img.png"),
                "label": _field("dry"),
                "source": _field("test"),
                "labeller": _field("human:x"),
                "time": _field("2026-01-01T00:00:00Z"),
                "version": _field(0),
                "group": _field(None),
                "condition": _field(None),
                "auto": _field(False),
            }
        ),
        source=_field("import"),
        note=_field(""),
        wrap=st.sampled_from(["list", "bare", "hostile"]),
        hostile=HOSTILE,
    )
    @example(fields=_entry(time="9999-12-31T23:59:59-05:00"), source="s", note="", wrap="list", hostile=None)
    @example(fields=_entry(time="0001-01-01T00:00:00+05:00"), source="s", note="", wrap="list", hostile=None)
    @example(
        fields=_entry(path="/data/\udcff.png", id="\ud800"), source="\udc80", note="", wrap="list", hostile=0
    )
    @example(fields=_entry(label=_DEEP[0], group=_DEEP[1]), source="s", note="", wrap="list", hostile=None)
    @example(fields=_entry(version=10**5000, sha256=10**5000), source="s", note="", wrap="list", hostile=None)
    @example(fields=_entry(), source="s", note="", wrap="hostile", hostile=5)
    @example(fields=_entry(), source="s", note="", wrap="hostile", hostile="e1")
    @SETTINGS
    def run(fields, source, note, wrap, hostile):
        with tempfile.TemporaryDirectory() as d:
            ds = Dataset.create(Path(d) / "ds", ["dry", "wet"])
            e = Entry(**fields)
            entries = [e] if wrap == "list" else (e if wrap == "bare" else hostile)
            version = _novelty_errors_only("Dataset.add", ds.add, entries, source=source, note=note)
            again = Dataset.open(ds.path)  # what was written reads back
            assert len(again) == (0 if version in (None, 0) else 1)
            if len(again):
                assert again.entries()[0] == e.__class__(**{**fields, "version": 1})

    assert _examples(run, "Dataset.add") >= EXAMPLES


CSV_PATHS = st.one_of(
    st.sampled_from(
        ["img0.png", "sub/../img0.png", "../img0.png", "/etc/passwd", "notes.txt", "missing.png", "."]
    ),
    TEXT,
)


def test_dataset_add_csv():
    row = st.tuples(
        st.one_of(st.sampled_from(["img0.png", "sub/../img0.png"]), _field("img0.png", CSV_PATHS)),
        st.one_of(st.sampled_from(["dry", "wet"]), _field("wet", TEXT)),
        _field("", TIME_TEXT),
        _field("g1", TEXT),
    )

    @given(rows=st.lists(row, min_size=1, max_size=3), outside=st.booleans(), header_ok=st.booleans())
    @example(
        rows=[("img0.png", "dry", "", "g1"), ("../../../../etc/passwd", "wet", "", "")],
        outside=False,
        header_ok=True,
    )
    @example(rows=[("../../../../etc/passwd", "wet", "", "")], outside=True, header_ok=True)
    @example(rows=[("notes.txt", "dry", "", "")], outside=False, header_ok=True)
    @example(rows=[("img0.png", "dry", "9999-12-31T23:59:59-05:00", "")], outside=False, header_ok=True)
    @example(rows=[("img0.png", "=1+2", "", "\ud800")], outside=False, header_ok=True)
    @example(rows=[("img0.png", "dry", "", "g1")], outside=False, header_ok=True)
    @SETTINGS
    def run(rows, outside, header_ok):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            data = root / "data"
            small_image(data / "img0.png")
            small_image(root / "img0.png", 1)
            (data / "notes.txt").write_text("root:x:0:0\n" * 50)
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["path", "label", "time", "group"] if header_ok else ["path", "label", "time"])
            w.writerows(rows)
            (data / "train.csv").write_bytes(buf.getvalue().encode("utf-8", "surrogatepass"))
            ds = Dataset.create(root / "ds", ["dry", "wet"])

            def add_csv() -> int:
                from novelty.flywheel.labels.labelimport import entries_from_csv

                entries = entries_from_csv(data / "train.csv", allow_outside_root=outside)
                return ds.add_entries(entries, source="csv:train.csv").version

            _novelty_errors_only("add-csv", add_csv)
            Dataset.open(ds.path)

    assert _examples(run, "add-csv") >= EXAMPLES


# --- drift ---------------------------------------------------------------------------------------------------
N = 24
_rng = np.random.default_rng(0)
_EMB = _rng.normal(size=(N, 8))
_P = _rng.uniform(0.01, 1.0, size=N)
_T = 1_700_000_000.0 + 3600.0 * np.arange(N)


def _array_or(valid: np.ndarray) -> st.SearchStrategy:
    """``valid``, ``valid`` with one cell hostile, or a hostile value instead of the array."""

    def spoil(x: Any) -> Any:
        out = valid.astype(object).tolist()
        if valid.ndim == 1:
            out[5] = x
        else:
            out[5][3] = x
        return out

    return _field(valid, st.one_of(NUMBERS.map(spoil), HOSTILE.map(spoil), HOSTILE))


def _with(a: np.ndarray, i: int, value: Any) -> list:
    out = a.astype(object).tolist()
    out[i] = value
    return out


def _monitor_args(**kw: Any) -> dict[str, Any]:
    base = {
        "embeddings": _EMB,
        "p_values": _P,
        "times": _T,
        "predictions": None,
        "window": "1d",
        "tests": ["pvalue-binomial"],
        "level": 0.05,
        "correction": "holm",
    }
    return {**base, **kw}


def test_drift_monitor():
    from novelty import drift

    ref = drift.DriftReference(np.random.default_rng(1).normal(size=(60, 8)))

    @given(
        embeddings=_array_or(_EMB),
        p_values=_array_or(_P),
        times=_array_or(_T),
        predictions=st.one_of(st.none(), _field(["dry"] * N)),
        window=st.one_of(st.sampled_from(["12", "1d", "1h", "500"]), _field("12")),
        tests=st.one_of(st.sampled_from([["pvalue-binomial"], ["mmd"], "pvalue-ks"]), _field(["pvalue-ks"])),
        level=_field(0.05),
        correction=_field("holm"),
    )
    @example(**_monitor_args(times=_with(_T, 5, 1e300)))
    @example(**_monitor_args(times=_with(_T, 5, 253_402_318_800.0), window="12"))
    @example(**_monitor_args(times=_with(_T, 5, -math.inf)))
    @example(**_monitor_args(times="2026-01-01"))
    @example(**_monitor_args(embeddings=_DEEP[0], p_values=None))
    @example(**_monitor_args(p_values=_with(_P, 3, 10**5000)))
    @example(**_monitor_args(window=10**5000, level=10**5000))
    @example(**_monitor_args(predictions=5, tests=7))
    @SETTINGS
    def run(embeddings, p_values, times, predictions, window, tests, level, correction):
        out = _novelty_errors_only(
            "drift.monitor",
            drift.monitor,
            ref,
            embeddings,
            p_values=p_values,
            times=times,
            predictions=predictions,
            window=window,
            tests=tests,
            level=level,
            correction=correction,
        )
        if out is not None:  # what it returns can be shown and saved
            json.dumps(out.to_json(), allow_nan=True)
            assert out.table()

    assert _examples(run, "drift.monitor") >= EXAMPLES


# --- the flag store (SQLite) ---------------------------------------------------------------------------------
def _flag_args(image: bytes, **kw: Any) -> dict[str, Any]:
    base = {
        "image": image,
        "source": "car-7",
        "prediction": None,
        "report": None,
        "captured_at": None,
        "metadata": None,
        "detector_version": None,
    }
    return {**base, **kw}


def test_flag_store_add(tmp_path_factory):
    from novelty.flags import SQLiteFlagStore

    store = SQLiteFlagStore(tmp_path_factory.mktemp("flags"))
    png = small_image(tmp_path_factory.mktemp("img") / "a.png").read_bytes()

    @given(
        image=_field(png),
        source=_field("car-7"),
        prediction=_field(None),
        report=_field(None),
        captured_at=_field(None, st.one_of(TIME_TEXT, HOSTILE)),
        metadata=_field(
            {"speed": 3.5},
            st.one_of(
                st.dictionaries(st.one_of(st.text(max_size=3), SURROGATES), HOSTILE, max_size=3),
                st.builds(dict, deep=DEEP),
                st.builds(dict, big=HUGE),
                st.just({"n": math.nan}),
                HOSTILE,
            ),
        ),
        detector_version=_field(None),
    )
    @example(**_flag_args(png, source="\ud800"))
    @example(**_flag_args(png, metadata={"a": "\udcff"}))
    @example(**_flag_args(png, metadata={"\ud800": 1}))
    @example(**_flag_args(png, metadata={"deep": _DEEP[1]}))
    @example(**_flag_args(png, metadata={"deep": _DEEP[0]}))
    @example(**_flag_args(png, metadata={"big": 10**5000}))
    @example(**_flag_args(png, captured_at="9999-12-31T23:59:59-05:00"))
    @example(**_flag_args(png, captured_at="0001-01-01T00:00:00+05:00"))
    @example(**_flag_args(png, prediction=["dry"], report={"a": 1}))
    @SETTINGS
    def run(image, source, prediction, report, captured_at, metadata, detector_version):
        _novelty_errors_only(
            "FlagStore.add",
            store.add,
            image,
            source=source,
            prediction=prediction,
            report=report,
            captured_at=captured_at,
            metadata=metadata,
            detector_version=detector_version,
        )

    try:
        assert _examples(run, "FlagStore.add") >= EXAMPLES
    finally:
        store.close()


# --- label readers: Label Studio JSON, CVAT XML, CSV -----------------------------------------------------------
IDS = st.one_of(st.integers(), st.text(max_size=4), st.floats(), st.none(), st.booleans())
JSONISH = st.recursive(
    st.one_of(
        st.none(), st.booleans(), NUMBERS.filter(lambda x: not isinstance(x, int) or abs(x) < 10**4000), TEXT
    ),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=4), c, max_size=3)),
    max_leaves=8,
)
RESULT = st.fixed_dictionaries(
    {
        "type": st.one_of(st.just("choices"), JSONISH),
        "from_name": st.one_of(st.just("label"), JSONISH),
        "value": st.one_of(
            st.fixed_dictionaries(
                {"choices": st.one_of(st.lists(st.sampled_from(["dry", "wet"]), max_size=2), JSONISH)}
            ),
            JSONISH,  # a string, a list, a number where an object belongs
        ),
    }
)
ANNOTATION = st.fixed_dictionaries(
    {"id": IDS, "result": st.one_of(st.lists(RESULT, max_size=2), JSONISH)},
    optional={
        "updated_at": st.one_of(TIME_TEXT, JSONISH),
        "created_at": st.one_of(TIME_TEXT, JSONISH),
        "was_cancelled": JSONISH,
        "completed_by": JSONISH,
    },
)
TASK = st.fixed_dictionaries(
    {
        "data": st.one_of(
            st.fixed_dictionaries(
                {"novelty_id": st.one_of(st.text(max_size=4), JSONISH), "sha256": JSONISH},
                optional={"image": st.one_of(st.just("/data/local-files/?d=a/b.png"), JSONISH)},
            ),
            JSONISH,
        )
    },
    optional={"id": IDS, "annotations": st.one_of(st.lists(ANNOTATION, max_size=3), JSONISH)},
)
RAW_JSON_TEXTS = frozenset(
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        "[" + "9" * 5000 + "]",
        '[{"data": {}, "annotations": [{"id": ' + "9" * 5000 + ', "result": []}]}]',
        "\ufeff[]",
        "[NaN, Infinity]",
        '"\\ud800"',
    ]
)
RAW_JSON = st.sampled_from(sorted(RAW_JSON_TEXTS))


def _ls_annotation(value: Any = None, **kw: Any) -> dict[str, Any]:
    value = {"choices": ["dry"]} if value is None else value
    return {"id": 1, "result": [{"type": "choices", "from_name": "label", "value": value}], **kw}


def _ls_task(value: Any = None, **kw: Any) -> dict[str, Any]:
    """A Label Studio task with one annotation (``kw`` go into the annotation)."""
    return {"id": 3, "data": {"novelty_id": "a"}, "annotations": [_ls_annotation(value, **kw)]}


#: two annotations of one task, changed at the same time, one with an int id and one with a str id
_MIXED_IDS = {
    "data": {"novelty_id": "b"},
    "annotations": [
        _ls_annotation(id=1, updated_at="2026-01-01T00:00:00Z"),
        _ls_annotation(id="x", updated_at="2026-01-01T00:00:00Z"),
    ],
}


def test_label_studio_reader():
    from novelty.flywheel.labels.labelstudio import read_export

    @given(export=st.one_of(st.lists(TASK, max_size=4), JSONISH, RAW_JSON, st.binary(max_size=40)))
    @example(export=[_ls_task(value="dry")])
    @example(export=[_ls_task(value=["dry"])])
    @example(export=[_MIXED_IDS])
    @example(export=[_ls_task(updated_at="9999-12-31T23:59:59-05:00")])
    @example(export=[_ls_task(created_at="0001-01-01T00:00:00+05:00")])
    @example(export="[" * 100_000 + "]" * 100_000)
    @example(export='[{"data": {}, "annotations": [{"id": ' + "9" * 5000 + ', "result": []}]}]')
    @SETTINGS
    def run(export):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "export.json"
            if isinstance(export, bytes):
                p.write_bytes(export)
            elif isinstance(export, str) and (export in RAW_JSON_TEXTS or export.startswith(("[[", "[{"))):
                p.write_text(export)
            else:
                p.write_text(json.dumps(export))  # lone surrogates as \\udcxx escapes
            read = _novelty_errors_only("Label Studio", read_export, p, document_root=Path(d))
            assert read is None or all(isinstance(r.label, str) for r in read.rows)

    assert _examples(run, "Label Studio") >= EXAMPLES


def _xml_image(name: Any, id_: Any, tags: list[Any]) -> str:
    attrs = "".join(f" {k}={quoteattr(str(v))}" for k, v in (("id", id_), ("name", name)) if v is not None)
    inner = "".join("<tag/>" if t is None else f"<tag label={quoteattr(str(t))} />" for t in tags)
    return f"<image{attrs}>{inner}</image>"


def test_cvat_reader():
    from novelty.flywheel.labels.cvat import read_annotations

    image = st.tuples(
        st.one_of(st.none(), st.sampled_from(["a.png", "../../etc/passwd", "/abs.png"]), TEXT),
        st.one_of(st.none(), IDS, TEXT),
        st.lists(st.one_of(st.none(), st.sampled_from(["dry", "wet"]), TEXT), max_size=3),
    )
    raw = st.sampled_from(
        [
            "<annotations>" + "<a>" * 100_000 + "</a>" * 100_000 + "</annotations>",
            '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><annotations>&x;</annotations>',
            "<other/>",
            "not xml",
            "",
        ]
    )

    @given(
        images=st.lists(image, max_size=4),
        root=st.one_of(st.none(), TEXT),
        raw=st.one_of(st.none(), raw),
        junk=st.one_of(st.none(), st.binary(max_size=30)),
    )
    @example(
        images=[],
        root=None,
        raw="<annotations>" + "<a>" * 100_000 + "</a>" * 100_000 + "</annotations>",
        junk=None,
    )
    @example(
        images=[("a.png", 1, ["dry", "wet"]), ("\ud800", "x", [None])], root="/data", raw=None, junk=None
    )
    @example(images=[("a.png", None, ["=1+2"])], root="\x00", raw=None, junk=None)
    @SETTINGS
    def run(images, root, raw, junk):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "annotations.xml"
            if junk is not None:
                p.write_bytes(junk)
            elif raw is not None:
                p.write_text(raw)
            else:
                comment = "" if root is None else f"<!-- novelty-image-root: {root.replace('--', '')} -->"
                body = "".join(_xml_image(*im) for im in images)
                text = f'<?xml version="1.0" encoding="utf-8"?>\n<annotations>{comment}<version>1.1</version>{body}</annotations>'
                p.write_bytes(text.encode("utf-8", "surrogatepass"))
            _novelty_errors_only("CVAT", read_annotations, p)

    assert _examples(run, "CVAT") >= EXAMPLES


def test_labels_csv_reader():
    from novelty.flywheel.labels.labelimport import read_labels_csv

    header = st.one_of(
        st.just(["id", "path", "label", "time", "sha256", "labeller", "group", "condition"]),
        st.lists(st.one_of(st.sampled_from(["id", "label", "path", "time"]), TEXT), max_size=4),
    )
    cell = st.one_of(TEXT, TIME_TEXT, NUMBERS.map(_number_text))

    @given(
        header=header,
        rows=st.lists(st.lists(cell, max_size=9), max_size=4),
        raw=st.one_of(st.none(), st.binary(max_size=40), st.just("id,label\n" + "a," + "x" * 200_000 + "\n")),
    )
    @example(header=["id", "label", "time"], rows=[["a", "dry", "9999-12-31T23:59:59-05:00"]], raw=None)
    @example(header=["id", "label", "time"], rows=[["a", "dry", "0001-01-01T00:00:00+05:00"]], raw=None)
    @example(header=["id", "label"], rows=[["\ud800", "dry"]], raw=None)
    @example(header=["id", "label"], rows=[["'=1+2", "'-neg"]], raw=None)
    @SETTINGS
    def run(header, rows, raw):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "labels.csv"
            if isinstance(raw, bytes):
                p.write_bytes(raw)
            elif raw is not None:
                p.write_text(raw)
            else:
                buf = io.StringIO()
                w = csv.writer(buf)
                w.writerow(header)
                w.writerows(rows)
                p.write_bytes(buf.getvalue().encode("utf-8", "surrogatepass"))
            read = _novelty_errors_only("labels CSV", read_labels_csv, p)
            if read is not None:
                for r in read.rows:
                    assert r.time is None or datetime.fromisoformat(r.time.replace("Z", "+00:00")) >= MIN_TIME

    assert _examples(run, "labels CSV") >= EXAMPLES


@pytest.fixture(scope="module", autouse=True)
def _counts():
    yield
    if _ran:
        print(
            "\nexamples per entry point (returned): "
            + ", ".join(f"{k} {v} ({_returned.get(k, 0)})" for k, v in _ran.items())
        )
