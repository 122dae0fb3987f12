"""The labelled dataset: versions, validation on add (nothing half-written), integrity on reading, the lock,
and the embedding cache. Real image files (textile) where files are hashed; synthetic entries for pure rules."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import sha256_file
from novelty.flywheel import dataset as dsmod
from novelty.flywheel.dataset import (
    Dataset,
    DatasetError,
    DatasetIntegrityError,
    DatasetLockedError,
    Entry,
    embed_entries,
    embedder_key,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory, textile_paths) -> list[Path]:
    """Eight real textile images copied into a folder of their own (tests may change them)."""
    d = tmp_path_factory.mktemp("images")
    out = []
    for i, p in enumerate(textile_paths["nominal"][:5] + textile_paths["global"][:3]):
        q = d / f"img{i}.jpg"
        shutil.copyfile(p, q)
        out.append(q)
    return out


def entry(path: Path, label: str, **kw) -> Entry:
    kw.setdefault("source", "test")
    kw.setdefault("labeller", "human:tester")
    return Entry.from_file(path, label, **kw)


def fake(i: int, label: str = "a", **kw) -> Entry:
    """A synthetic entry (for rules that do not read files)."""
    sha = f"{i:064x}"
    base = dict(id=f"e{i}", sha256=sha, path=f"/nowhere/{i}.png", label=label, source="s", labeller="human:x")
    base.update(kw)
    return Entry(**base)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file() and p.name != ".lock"}


def test_create_open_add_round_trip(tmp_path, images):
    ds = Dataset.create(tmp_path / "ds", ["wet", "dry"])
    assert ds.classes == ["dry", "wet"] and ds.latest_version == 0 and ds.entries() == []
    v = ds.add(
        [entry(images[0], "dry"), entry(images[1], "wet", group="g1", condition="tunnel")], source="train"
    )
    assert v == 1
    back = Dataset.open(tmp_path / "ds")
    es = back.entries()
    assert [e.label for e in es] == ["dry", "wet"]
    assert es[0].sha256 == sha256_file(images[0]) and es[0].id == es[0].sha256 and es[0].version == 1
    assert es[1].group == "g1" and es[1].condition == "tunnel" and es[1].auto is False
    assert Path(es[0].path).is_absolute()
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["format"] == "novelty-dataset" and meta["format_version"] == 1
    rec = meta["versions"][0]
    assert rec["n_added"] == 2 and rec["source"] == "train"
    assert rec["entries_sha256"] == sha256_file(tmp_path / "ds" / "entries.jsonl")
    lines = (tmp_path / "ds" / "entries.jsonl").read_text().splitlines()
    assert set(json.loads(lines[0])) == {
        "id", "sha256", "path", "label", "source", "labeller", "time", "version", "group", "condition", "auto"
    }  # fmt: skip


def test_versions_identity_and_filters(tmp_path, images):
    ds = Dataset.create(tmp_path / "ds", ["dry", "wet"])
    ds.add([entry(images[0], "dry", time="2026-01-01T00:00:00Z")], source="train")
    id1 = ds.identity()
    ds.add([entry(images[1], "wet", time="2026-03-01T00:00:00Z")], source="labels")
    assert ds.latest_version == 2 and ds.identity() != id1
    assert ds.identity(1) == id1 == Dataset.open(ds.path).identity(1)
    assert [e.version for e in ds.entries()] == [1, 2]
    assert len(ds.entries(version=1)) == 1
    assert [e.version for e in ds.entries(versions=[2])] == [2]
    assert [e.version for e in ds.entries(since="2026-02-01")] == [2]
    with pytest.raises(InvalidInputError, match="version 7 does not exist"):
        ds.entries(version=7)
    with pytest.raises(InvalidInputError, match="ISO-8601"):
        ds.entries(since="yesterday")


def test_same_image_same_label_is_skipped_not_duplicated(tmp_path, images):
    ds = Dataset.create(tmp_path / "ds", ["dry", "wet"])
    ds.add([entry(images[0], "dry")], source="a")
    # again, under another id, and twice within one batch (another id again)
    res = ds.add_entries(
        [
            entry(images[0], "dry", id="flag:1"),
            entry(images[1], "wet"),
            entry(images[1], "wet", id="flag:2"),
        ],
        source="b",
    )
    assert res.version == 2 and len(res.added) == 1 and len(res.skipped) == 2
    assert res.counts() == {"wet": 1}
    assert len(Dataset.open(ds.path).entries()) == 2
    # nothing new at all: no version is written
    before = snapshot(ds.path)
    res = ds.add_entries([entry(images[0], "dry")], source="c")
    assert res.version == 2 and not res.added and len(res.skipped) == 1
    assert snapshot(ds.path) == before


@pytest.mark.parametrize(
    ("batch", "pattern"),
    [
        ([fake(1, "bogus")], r"unknown class 'bogus'"),
        ([fake(1), fake(2, id="e1")], r"duplicate id e1"),
        (
            [fake(1, "a"), fake(1, "b", id="other")],
            r"conflicting labels: image 0{12}… given 'a' as e1 .* and 'b' as other",
        ),
        ([fake(1, sha256="xyz")], r"sha256 must be 64 lower-case hex"),
        ([fake(1, path="relative/p.png")], r"path must be absolute"),
        ([fake(1, labeller="")], r"labeller must be a non-empty string"),
        ([fake(1, time="not a time")], r"ISO-8601"),
        ([fake(1, auto="yes")], r"auto must be true or false"),
        (["not an entry"], r"expected an Entry"),
    ],
)
def test_add_refuses_invalid_batches_and_writes_nothing(tmp_path, batch, pattern):
    ds = Dataset.create(tmp_path / "ds", ["a", "b"])
    ds.add([fake(100)], source="first")
    before = snapshot(ds.path)
    with pytest.raises(InvalidInputError, match=pattern):
        ds.add(batch, source="bad")
    assert snapshot(ds.path) == before
    assert Dataset.open(ds.path).latest_version == 1


def test_conflicts_with_existing_entries(tmp_path):
    ds = Dataset.create(tmp_path / "ds", ["a", "b"])
    ds.add([fake(1, "a")], source="first")
    before = snapshot(ds.path)
    with pytest.raises(
        InvalidInputError,
        match=r"conflicting labels: image 0{12}… .* given 'b' as new but labelled 'a' as e1 in version 1",
    ):
        ds.add([fake(1, "b", id="new")], source="x")
    with pytest.raises(InvalidInputError, match=r"id already used: e1 names image 0{12}…"):
        ds.add([fake(2, "a", id="e1")], source="x")
    assert snapshot(ds.path) == before


def test_every_offender_is_named_up_to_the_limit(tmp_path):
    ds = Dataset.create(tmp_path / "ds", ["a"])
    few = [fake(i, "zz") for i in range(3)] + [fake(10), fake(11, id="e10")]
    with pytest.raises(InvalidInputError) as err:
        ds.add(few, source="x")
    msg = str(err.value)
    assert "4 problem(s)" in msg and all(f"e{i}" in msg for i in (0, 1, 2)) and "duplicate id e10" in msg
    many = [fake(i, "zz") for i in range(dsmod.MAX_LISTED + 5)]
    with pytest.raises(InvalidInputError, match=r"and 5 more$"):
        ds.add(many, source="x")


def test_classes_are_fixed_until_added_explicitly(tmp_path):
    ds = Dataset.create(tmp_path / "ds", ["a", "b"])
    ds.add([fake(1)], source="x")
    with pytest.raises(InvalidInputError, match="unknown class 'c'"):
        ds.add([fake(2, "c")], source="x")
    v = ds.add_classes(["c"])
    assert v == 2 and ds.classes == ["a", "b", "c"] and ds.classes_at(1) == ["a", "b"]
    assert ds.identity(2) != ds.identity(1)
    ds.add([fake(2, "c")], source="x")
    back = Dataset.open(ds.path)
    assert (
        back.classes == ["a", "b", "c"] and back.latest_version == 3 and back.classes_at(2) == ["a", "b", "c"]
    )
    with pytest.raises(InvalidInputError, match=r"exist already"):
        back.add_classes(["a"])


@pytest.mark.parametrize(
    ("classes", "pattern"),
    [
        ([], "at least one"),
        (["a", "a"], "repeated"),
        (["a,b"], "without commas"),
        ("ab", "list of names"),
        ([" a"], "surrounding"),
    ],
)
def test_bad_classes(tmp_path, classes, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        Dataset.create(tmp_path / "ds", classes)


def test_create_refuses_an_existing_folder_and_open_a_missing_one(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DatasetError, match="already exists"):
        Dataset.create(tmp_path / "full", ["a"])
    with pytest.raises(DatasetError, match=r"not a labelled dataset: no dataset.json .*no such directory"):
        Dataset.open(tmp_path / "missing")
    Dataset.create(tmp_path / "empty", ["a"])  # an empty existing folder is fine
    with pytest.raises(DatasetError, match="already exists"):
        Dataset.create(tmp_path / "empty", ["a"])


def _edit_line(path: Path, i: int, **changes) -> None:
    lines = path.read_text().splitlines(keepends=True)
    obj = json.loads(lines[i])
    obj.update(changes)
    lines[i] = json.dumps(obj, separators=(",", ":")) + "\n"
    path.write_text("".join(lines))


def test_reading_finds_changed_truncated_and_foreign_files(tmp_path):
    ds = Dataset.create(tmp_path / "ds", ["a", "b"])
    ds.add([fake(1), fake(2)], source="x")
    ds.add([fake(3, "b")], source="y")
    good = snapshot(ds.path)
    entries = ds.path / "entries.jsonl"

    _edit_line(entries, 0, label="b")  # a label changed after the fact
    with pytest.raises(DatasetIntegrityError, match="up to version 1 do not match the sha256"):
        Dataset.open(ds.path)
    entries.write_bytes(good["entries.jsonl"][:-30])  # truncated
    with pytest.raises(DatasetIntegrityError, match="ends before version 2"):
        Dataset.open(ds.path)
    entries.unlink()
    with pytest.raises(DatasetIntegrityError, match="missing"):
        Dataset.open(ds.path)
    entries.write_bytes(good["entries.jsonl"])

    meta_path = ds.path / "dataset.json"
    meta = json.loads(good["dataset.json"])
    for change, pattern in (
        ({"format": "something-else"}, "not a novelty dataset"),
        ({"format_version": 2}, "format_version 2"),
        ({"versions": [{"version": 1}]}, "version record #1 is malformed"),
        ({"classes": ["a"]}, "unknown class 'b'"),
    ):
        meta_path.write_text(json.dumps({**meta, **change}))
        with pytest.raises(NoveltyError, match=pattern):
            Dataset.open(ds.path)
    meta_path.write_text("{not json")
    with pytest.raises(DatasetIntegrityError, match="not readable as JSON"):
        Dataset.open(ds.path)
    meta_path.write_bytes(good["dataset.json"])
    assert len(Dataset.open(ds.path).entries()) == 3


def test_an_interrupted_add_leaves_the_previous_version_intact(tmp_path):
    """entries.jsonl is written before dataset.json: lines no version records are not part of the dataset."""
    ds = Dataset.create(tmp_path / "ds", ["a"])
    ds.add([fake(1)], source="x")
    with open(ds.path / "entries.jsonl", "ab") as fh:  # a crash after the first write of an add
        fh.write(dsmod._entry_line(fake(2, version=2)))
    back = Dataset.open(ds.path)
    assert [e.id for e in back.entries()] == ["e1"] and back.latest_version == 1
    back.add([fake(3)], source="y")  # the next add overwrites the leftover
    assert [e.id for e in Dataset.open(ds.path).entries()] == ["e1", "e3"]


def test_concurrent_adds_do_not_interleave(tmp_path):
    Dataset.create(tmp_path / "ds", ["a"])
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            ds = Dataset.open(tmp_path / "ds")  # each writer has its own (soon stale) view
            for j in range(5):
                ds.add([fake(1000 * k + j)], source=f"w{k}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(1, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    back = Dataset.open(tmp_path / "ds")  # verifies every version's sha256
    assert back.latest_version == 15 and len(back.entries()) == 15
    assert [v["version"] for v in back.versions] == list(range(1, 16))


def test_a_held_lock_makes_add_wait_then_fail(tmp_path, monkeypatch):
    ds = Dataset.create(tmp_path / "ds", ["a"])
    monkeypatch.setattr(dsmod, "LOCK_TIMEOUT_S", 0.2)
    with dsmod._Lock(ds.path, 1.0), pytest.raises(DatasetLockedError, match="another process"):
        ds.add([fake(1)], source="x")
    assert ds.add([fake(1)], source="x") == 1


# --- embeddings -------------------------------------------------------------------------------------------
class CountingEmbedder:
    """A stand-in embedder: a fixed function of the image bytes, counting what it embeds."""

    def __init__(self, fingerprint: str = "f" * 64, batch_size: int = 8) -> None:
        self.fingerprint, self.batch_size, self.calls = fingerprint, batch_size, 0

    def config(self) -> dict:
        return {"backbone": "fake", "fingerprint": self.fingerprint, "batch_size": self.batch_size, "dim": 4}

    def embed(self, images) -> np.ndarray:
        self.calls += len(images)
        rows = [
            np.frombuffer(bytes(b)[:4].ljust(4, b"\0"), dtype=np.uint8).astype(np.float32) for b in images
        ]
        return np.stack([r + len(b) for r, b in zip(rows, images, strict=True)])


def test_embed_entries_caches_by_sha256_and_verifies_files(tmp_path, images):
    ds = Dataset.create(tmp_path / "ds", ["dry", "wet"])
    es = [entry(p, "dry") for p in images[:4]]
    ds.add(es, source="x")
    emb = CountingEmbedder()
    got = embed_entries(ds.entries(), emb, ds.embeddings_dir)
    assert got.dtype == np.float32 and got.shape == (4, 4) and emb.calls == 4
    cache = ds.embeddings_dir / f"{embedder_key(emb)}.npz"
    with np.load(cache, allow_pickle=False) as z:
        assert sorted(z["sha256"].tolist()) == sorted(e.sha256 for e in es)
    again = embed_entries(list(reversed(ds.entries())), emb, ds.embeddings_dir)
    assert emb.calls == 4 and np.array_equal(again, got[::-1])  # all from the cache
    # the same image twice is embedded once
    emb2 = CountingEmbedder("e" * 64)
    embed_entries([es[0], es[0]], emb2)
    assert emb2.calls == 1


def test_embed_entries_refuses_changed_or_missing_files(tmp_path, images):
    p = tmp_path / "x.jpg"
    shutil.copyfile(images[0], p)
    e = entry(p, "dry")
    p.write_bytes(images[1].read_bytes())
    with pytest.raises(DatasetIntegrityError, match="changed since it was labelled"):
        embed_entries([e], CountingEmbedder())
    p.unlink()
    with pytest.raises(DatasetIntegrityError, match="cannot read its image"):
        embed_entries([e], CountingEmbedder())


def test_embedder_key_names_what_changes_the_vectors():
    assert embedder_key(CountingEmbedder()) == embedder_key(CountingEmbedder(batch_size=64))
    assert embedder_key(CountingEmbedder()) != embedder_key(CountingEmbedder("0" * 64))

    class NoFingerprint(CountingEmbedder):
        def config(self) -> dict:
            return {"backbone": "fake"}

    with pytest.raises(InvalidInputError, match="no weights fingerprint"):
        embedder_key(NoFingerprint())


@pytest.mark.slow
def test_embed_entries_with_the_real_backbone_matches_embedding_the_files(tmp_path, images, embedder):
    ds = Dataset.create(tmp_path / "ds", ["dry", "wet"])
    ds.add([entry(p, "dry") for p in images[:4]], source="x")
    got = embed_entries(ds.entries(), embedder, ds.embeddings_dir)
    direct = embedder.embed([str(p) for p in images[:4]])
    np.testing.assert_allclose(got, direct, atol=1e-5)
    cached = embed_entries(ds.entries(), embedder, ds.embeddings_dir)
    assert np.array_equal(cached, got)


def test_text_with_unicode_line_separators_round_trips(tmp_path):
    """Lines are split on newlines only: a path or group holding U+2028 or U+0085 stays one entry."""
    ds = Dataset.create(tmp_path / "ds", ["nässe", "a"])
    ds.add([fake(1, "nässe", path="/nowhere/a\u2028b.png", group="g\x85h")], source="x")
    (e,) = Dataset.open(ds.path).entries()
    assert e.path == "/nowhere/a\u2028b.png" and e.group == "g\x85h" and e.label == "nässe"


def test_entries_that_are_not_utf8_are_an_integrity_error(tmp_path):
    ds = Dataset.create(tmp_path / "ds", ["a"])
    ds.add([fake(1)], source="x")
    entries = ds.path / "entries.jsonl"
    bad = entries.read_bytes().replace(b'"e1"', b'"e\xff"')
    entries.write_bytes(bad)
    meta = json.loads((ds.path / "dataset.json").read_text())
    meta["versions"][0]["entries_sha256"] = sha256_file(entries)  # consistent, but not text
    (ds.path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetIntegrityError, match="line 1: not a valid entry"):
        Dataset.open(ds.path)
