"""``selection.json`` has one reader in two modes: :meth:`Selection.load` (strict, a file as ``novelty select``
writes it) and :func:`read_selection` (lenient, what labelling reads). A file ``novelty select`` wrote reads
the same both ways; a minimal hand-written file reads leniently and is refused strictly."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from novelty.errors import InvalidInputError
from novelty.fileio import sha256_bytes, sha256_file
from novelty.flywheel.pools import Pool
from novelty.flywheel.selection import SelectedItem, Selection, SelectionError, read_selection, select


def _pool(n: int = 12) -> Pool:
    """A pool with a head and a trust decision: every field a selection item can carry is filled in."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 8))
    p = np.linspace(0.001, 0.9, n)
    u = np.linspace(0.05, 0.45, n)
    ids = [f"img{i:02d}" for i in range(n)]
    return Pool(
        ids=ids,
        paths=[f"/data/{i}.jpg" for i in ids],
        sha256=[sha256_bytes(i.encode()) for i in ids],
        sources=[("folder:/data", "flag:7")] * n,
        embeddings=(x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32),
        p_value=p,
        novelty=1 - p,
        score=-p,
        is_novel=p < 0.05,
        timestamps=["2024-05-01T12:00:00Z"] * n,
        alpha=0.05,
        detector_id="det-both",
        train_distance=np.full(n, 0.3),
        predictions=["dry" if i % 3 else "wet" for i in range(n)],
        probabilities=np.stack([1 - u, u], axis=1),
        classes=["dry", "wet"],
        trusted=np.arange(n) % 2 == 0,
        competence=np.linspace(0.2, 0.99, n),
        trust={"rule": "competence", "risk": 0.05, "delta": 0.1, "thresholds": {"0.05": 0.8, "0.1": None}},
        nearest=[f"train{i}" for i in range(n)],
        groups=["g1" if i < 4 else None for i in range(n)],
        conditions=["fog" if i % 4 == 0 else None for i in range(n)],
    )


def test_a_selection_file_reads_the_same_both_ways(tmp_path):
    path = select(_pool(), 8, "hybrid", seed=1).save(tmp_path / "selection.json")
    strict = Selection.load(path)
    lenient = read_selection(path)
    assert lenient.items == strict.items and len(strict.items) == 8
    assert all(isinstance(it, SelectedItem) for it in lenient.items)
    assert lenient == strict  # the header too (the file it came from is recorded, not compared)
    assert (lenient.path, lenient.sha256) == (os.path.abspath(path), sha256_file(path))
    assert (strict.path, strict.sha256) == (None, None)
    # a Selection object, the parsed dict and the file all read the same
    assert read_selection(strict).items == read_selection(json.loads(path.read_text())).items == strict.items
    assert read_selection(lenient).path == lenient.path  # read again, it keeps its file
    # the lookups labelling uses
    first = strict.items[0]
    assert lenient.by_id(first.id) is lenient.items[0]
    assert lenient.by_path("/data/../data/" + os.path.basename(first.path)) is lenient.items[0]
    assert lenient.by_id("nope") is None and lenient.by_path("/nope.jpg") is None


def test_the_lenient_reader_takes_a_minimal_hand_written_file(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"a")
    hand = {
        "format": "novelty-selection",
        "items": [
            {"id": "a", "path": str(tmp_path / "sub" / ".." / "a.jpg"), "sha256": "s1"},
            {"id": "b", "path": "b.jpg", "sha256": "s2", "p_value": 0.5, "is_novel": 0, "rank": "2"},
        ],
    }
    f = tmp_path / "hand.json"
    f.write_text(json.dumps(hand))
    sel = read_selection(f)
    a, b = sel.items
    assert a == SelectedItem(id="a", path=str(tmp_path / "a.jpg"), sha256="s1")
    assert (a.source, a.rank, a.reason, a.p_value, a.novelty, a.is_novel, a.trusted) == (
        "",
        0,
        "",
        *[None] * 4,
    )
    assert b.path == os.path.abspath("b.jpg") and (b.p_value, b.is_novel, b.rank) == (0.5, False, 2)
    assert (sel.classes, sel.alpha, sel.model_version, sel.strategy, sel.trust) == ([], 0.05, "", "", None)
    assert sel.by_path(str(tmp_path / "a.jpg")) is a
    # the strict reader wants what novelty select writes
    with pytest.raises(SelectionError, match="format_version"):
        Selection.load(f)
    hand["format_version"] = 1
    f.write_text(json.dumps(hand))
    with pytest.raises(SelectionError, match="missing field 'strategy'"):
        Selection.load(f)
    # the lenient reader still refuses what labelling cannot use, listing every bad item
    hand["items"] += [{"id": "c", "path": "/c"}, {"id": "a", "path": "/d", "sha256": "s4", "trusted": "yes"}]
    with pytest.raises(InvalidInputError) as e:
        read_selection(hand)
    assert "2 bad item(s)" in str(e.value) and "item #2: sha256 must be a non-empty string" in str(e.value)
    assert "trusted must be true, false or null" in str(e.value)
