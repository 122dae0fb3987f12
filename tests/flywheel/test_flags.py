"""The flag store: the same contract on SQLite and on a real PostgreSQL server started by the test."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import pytest
from postgres_server import postgres_server, why_no_postgres
from serve_support import street_jpegs

from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import TMP_PREFIX
from novelty.flags import (
    FlagImageMissingError,
    FlagStore,
    FlagStoreError,
    SQLiteFlagStore,
    flag_id,
    open_flag_store,
    parse_metadata,
)
from novelty.flags.base import prepare_flag


@pytest.fixture(scope="module")
def pg_url():
    reason = why_no_postgres()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


_pg_schemas = iter(range(10_000))


@pytest.fixture(params=["sqlite", "postgres"])
def store_location(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "flags")
    url = request.getfixturevalue("pg_url")
    # a fresh database per test: the same server, a new database
    import psycopg

    name = f"t{next(_pg_schemas)}_{request.node.name.split('[')[0][-20:]}".lower()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def store(store_location):
    s = open_flag_store(store_location)
    yield s
    s.close()


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return street_jpegs(12)


def test_add_get_image_round_trip(store, jpegs):
    assert isinstance(store, FlagStore)
    captured = datetime(2026, 11, 28, 10, 0, 0, 123456, tzinfo=timezone.utc)
    before = datetime.now(timezone.utc)
    flag, created = store.add(
        jpegs[0],
        source="car-17",
        prediction="wet",
        report="wipers ran in a tunnel",
        captured_at=captured,
        metadata={"speed_kmh": 42.5, "tags": ["tunnel", "night"]},
        detector_version="ab" * 32,
    )
    after = datetime.now(timezone.utc)
    assert created is True
    assert flag.sha256 == hashlib.sha256(jpegs[0]).hexdigest()
    assert flag.id == flag_id(flag.sha256, "car-17")
    assert flag.size == len(jpegs[0])
    assert before - timedelta(seconds=1) <= flag.received_at <= after + timedelta(seconds=1)
    assert flag.captured_at == captured
    assert dict(flag.metadata) == {"speed_kmh": 42.5, "tags": ["tunnel", "night"]}
    assert (flag.prediction, flag.report, flag.detector_version) == (
        "wet",
        "wipers ran in a tunnel",
        "ab" * 32,
    )
    assert store.get(flag.id) == flag
    assert store.image(flag.id) == jpegs[0]
    assert store.get("0" * 32) is None
    with pytest.raises(FlagStoreError):
        store.image("0" * 32)
    assert flag.to_json()["captured_at"] == "2026-11-28T10:00:00.123456Z"


def test_same_image_and_source_is_stored_once(store, jpegs):
    first, created = store.add(jpegs[1], source="car-1", prediction="dry")
    again, created_again = store.add(jpegs[1], source="car-1", prediction="wet", report="other text")
    assert (created, created_again) == (True, False)
    assert again == first  # the first record wins; nothing is overwritten
    other, created_other = store.add(jpegs[1], source="car-2")
    assert created_other and other.id != first.id and other.sha256 == first.sha256
    unnamed, _ = store.add(jpegs[2])
    assert unnamed.source == ""
    assert store.count() == 3


def test_list_since_and_pages(store, jpegs):
    flags = [store.add(j, source=f"cam-{i}")[0] for i, j in enumerate(jpegs[:7])]
    listed = store.list()
    assert [f.id for f in listed] == [f.id for f in sorted(flags, key=lambda f: (f.received_at, f.id))]
    # pages of 3 cover everything once, in order
    seen, after = [], None
    while True:
        page = store.list(after=after, limit=3)
        seen += page
        if len(page) < 3:
            break
        after = page[-1].id
    assert [f.id for f in seen] == [f.id for f in listed]
    cut = listed[4].received_at
    assert [f.id for f in store.list(since=cut)] == [f.id for f in listed if f.received_at >= cut]
    assert store.list(since=(cut + timedelta(days=1)).isoformat()) == []
    assert len(store.list(since="2000-01-01T00:00:00Z")) == 7
    with pytest.raises(InvalidInputError, match="ISO-8601"):
        store.list(since="yesterday")
    with pytest.raises(InvalidInputError, match="not the id"):
        store.list(after="nope")
    with pytest.raises(InvalidInputError, match="limit"):
        store.list(limit=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image": b""}, "empty"),
        ({"image": "not bytes"}, "bytes"),
        ({"source": "x" * 300}, "source"),
        ({"source": 17}, "source"),
        ({"report": "a\x00b"}, "NUL"),
        ({"metadata": {"x": object()}}, "JSON"),
        ({"metadata": ["not", "a", "dict"]}, "JSON object"),
        ({"metadata": {"big": "x" * 20_000}}, "limit"),
        ({"captured_at": "last tuesday"}, "ISO-8601"),
    ],
)
def test_bad_fields_are_refused_and_nothing_is_stored(store, jpegs, kwargs, message):
    args = {"image": jpegs[0], **kwargs}
    image = args.pop("image")
    with pytest.raises(InvalidInputError, match=message):
        store.add(image, **args)
    assert store.count() == 0


def _deep(depth: int, leaf: object = 1) -> dict:
    """``{"a": {"a": … leaf}}`` ``depth`` objects deep, built without recursion."""
    out: object = leaf
    for _ in range(depth):
        out = {"a": out}
    assert isinstance(out, dict)
    return out


def _deep_list(depth: int) -> list:
    out: list = [1]
    for _ in range(depth - 1):
        out = [out]
    return out


def _cycle() -> dict:
    d: dict = {}
    d["self"] = d
    return d


def _wide_dag(depth: int = 40) -> dict:
    """A list that holds the same list twice, 40 deep: 2**40 values once serialised."""
    node: list = []
    for _ in range(depth):
        node = [node, node]
    return {"x": node}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metadata": _deep(5000)}, "nested more than 32"),
        ({"metadata": {"list": _deep_list(34)}}, "nested"),
        ({"metadata": _deep(33)}, "nested"),
        ({"metadata": _cycle()}, "nested"),
        ({"metadata": _wide_dag()}, "nested|values"),
        ({"metadata": {f"k{i}": i for i in range(20_000)}}, "values"),
        ({"metadata": {"note": "\ud800"}}, "surrogate"),
        ({"metadata": {"\udfff": 1}}, "surrogate"),
        ({"metadata": {"a": ["ok", {"b": "x\udc00y"}]}}, "surrogate"),
        ({"source": "car-\ud800"}, "source.*surrogate"),
        ({"report": "\udbff"}, "report.*surrogate"),
    ],
    ids=[
        *("5000-deep", "list-34-deep", "33-deep", "cycle", "shared-2^40", "20000-keys", "surrogate-value"),
        *("surrogate-key", "surrogate-nested", "surrogate-source", "surrogate-report"),
    ],
)
def test_hostile_metadata_and_text_are_refused_with_a_novelty_error(store, jpegs, kwargs, message):
    """What used to escape as RecursionError or UnicodeEncodeError is an InvalidInputError (a NoveltyError)
    naming the limit, and nothing is stored."""
    with pytest.raises(InvalidInputError, match=message) as info:
        store.add(jpegs[0], **kwargs)
    assert isinstance(info.value, NoveltyError) and "\n" not in str(info.value)
    assert store.count() == 0


def test_metadata_at_the_limits_is_stored(store, jpegs):
    flag, created = store.add(jpegs[0], metadata=_deep(32), source="deep")
    assert created and flag.metadata == _deep(32)
    again = store.get(flag.id)
    assert again is not None and again.metadata == _deep(32)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a":' * 5000 + "1" + "}" * 5000, "nested 5000 levels deep; the limit is 32"),
        ("[" * 3000 + "]" * 3000, "nested 3000 levels"),
        ('{"s": "' + "[" * 3000 + '"}', None),  # brackets inside a string are text, not nesting
        ('{"a": "\\ud800"}', "surrogate"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ("x" * 70_000, "limit"),
    ],
)
def test_parse_metadata_checks_before_parsing(text, message):
    if message is None:
        assert parse_metadata(text) == {"s": "[" * 3000}
        return
    with pytest.raises(InvalidInputError, match=message):
        meta = parse_metadata(text)
        prepare_flag(
            b"x",
            source="",
            prediction=None,
            report=None,
            captured_at=None,
            metadata=meta,
            detector_version=None,
        )


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
def test_out_of_range_times_are_invalid_input(store, jpegs, when):
    with pytest.raises(InvalidInputError, match="out of range"):
        store.add(jpegs[0], captured_at=when)
    with pytest.raises(InvalidInputError, match="out of range"):
        store.list(since=when)
    assert store.count() == 0


def test_sqlite_missing_image_is_named_and_a_reflag_writes_it_again(tmp_path, jpegs):
    store = SQLiteFlagStore(tmp_path / "flags")
    flag, _ = store.add(jpegs[5], source="cam")
    path = tmp_path / "flags" / "images" / flag.sha256[:2] / flag.sha256
    path.unlink()
    with pytest.raises(FlagImageMissingError, match=f"flag {flag.id}: its image file .* is missing"):
        store.image(flag.id)
    again, created = store.add(jpegs[5], source="cam")
    assert again == flag and created is False
    assert path.read_bytes() == jpegs[5] and store.image(flag.id) == jpegs[5]
    assert [p.name for p in path.parent.iterdir()] == [flag.sha256]  # atomic: no temporary left
    store.close()


def test_concurrent_threads_store_each_flag_once(store, jpegs):
    """8 threads add the same 12 images × 2 sources, each in a different order: 24 flags, each once."""
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            order = [(i, s) for i in range(len(jpegs)) for s in ("a", "b")]
            order = order[seed:] + order[:seed]
            for i, s in order:
                f, created = store.add(jpegs[i], source=s)
                with lock:
                    results.append((f.id, created))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k * 3,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == 8 * 24
    created_ids = [fid for fid, created in results if created]
    assert len(created_ids) == 24 and len(set(created_ids)) == 24  # each flag created exactly once
    assert store.count() == 24


def _writer_process(location: str, jpegs: list[bytes], seed: int, out: multiprocessing.Queue) -> None:
    store = open_flag_store(location)
    created = 0
    for k in range(len(jpegs)):
        i = (k + seed) % len(jpegs)
        created += store.add(jpegs[i], source=f"src-{i % 3}")[1]
    store.close()
    out.put(created)


def test_concurrent_processes_store_each_flag_once(store_location, jpegs):
    """4 processes write the same 12 flags at once through their own store objects."""
    open_flag_store(store_location).close()  # create the schema first
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_writer_process, args=(store_location, jpegs, s * 5, out)) for s in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert sum(out.get(timeout=10) for _ in procs) == len(jpegs)
    store = open_flag_store(store_location)
    try:
        assert store.count() == len(jpegs)
        assert {f.sha256 for f in store.list()} == {hashlib.sha256(j).hexdigest() for j in jpegs}
    finally:
        store.close()


def test_sqlite_layout_wal_and_content_addressed_images(tmp_path, jpegs):
    store = SQLiteFlagStore(tmp_path / "flags")
    f1, _ = store.add(jpegs[0], source="a")
    f2, _ = store.add(jpegs[0], source="b")
    store.close()
    images = [p for p in (tmp_path / "flags" / "images").rglob("*") if p.is_file()]
    assert [p.name for p in images] == [f1.sha256]  # one file for the two flags of the same image
    assert images[0].read_bytes() == jpegs[0]
    with sqlite3.connect(tmp_path / "flags" / "flags.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM flags").fetchone()[0] == 2
    assert f2.id != f1.id


def test_sqlite_reopen_after_crash_leftovers(tmp_path, jpegs):
    """A temporary image left by a killed writer does not disturb the store; an image without a row (killed
    between the image write and the commit) is reused when the flag is sent again."""
    store = SQLiteFlagStore(tmp_path / "flags")
    flag, _ = store.add(jpegs[3], source="x")
    store.close()
    sha = hashlib.sha256(jpegs[4]).hexdigest()
    d = tmp_path / "flags" / "images" / sha[:2]
    d.mkdir(exist_ok=True)
    (d / sha).write_bytes(jpegs[4])  # the image made it to disk, the row did not
    (d / f"{TMP_PREFIX}1234-abcd-{sha}").write_bytes(jpegs[4][:100])  # a half-written temporary
    store = SQLiteFlagStore(tmp_path / "flags")
    assert store.get(flag.id) == flag
    again, created = store.add(jpegs[4], source="x")
    assert created and store.image(again.id) == jpegs[4] and store.count() == 2
    store.close()


def test_open_flag_store_dispatch(tmp_path):
    s = open_flag_store(f"sqlite://{tmp_path / 'a'}")
    assert isinstance(s, SQLiteFlagStore) and s.root == tmp_path / "a"
    s.close()
    with pytest.raises(FlagStoreError):
        open_flag_store("postgresql://nobody@127.0.0.1:1/none")
    blocked = tmp_path / "file"
    blocked.write_text("x")
    with pytest.raises(FlagStoreError, match="cannot create"):
        open_flag_store(str(blocked / "sub"))


def test_postgres_password_is_not_in_messages():
    from novelty.flags.postgres import _redact

    assert _redact("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "s3cret" not in _redact("postgresql://u:s3cret@h/db")


def test_postgres_store_survives_a_server_restart(pg_url, jpegs):
    """A connection lost to a restarted server is replaced on the next call: terminate every other backend
    (what a server restart does to the store's connections) and keep using the store."""
    import psycopg

    store = open_flag_store(pg_url)
    try:
        store.add(jpegs[5], source="before")
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            )
        flag, created = store.add(jpegs[6], source="after")
        assert created and store.get(flag.id) == flag
    finally:
        store.close()


def test_both_backends_have_the_interface() -> None:
    """The interface is a Protocol: both backends satisfy it."""
    from novelty.flags.postgres import PostgresFlagStore

    for cls in (SQLiteFlagStore, PostgresFlagStore):
        for name in ("add", "get", "image", "list", "count", "close"):
            assert callable(getattr(cls, name))
