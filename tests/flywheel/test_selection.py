"""Selection under a budget (novelty.flywheel.selection, .pools, `novelty select`).

Properties of each strategy on controlled embeddings (k-center against a brute-force reference, the radius,
the orders of novelty and uncertainty, what hybrid mixes, determinism in the seed), the selection file, and
pools built from real data: a results file of real textile images, a folder, an archive, a SQLite flag store.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from novelty.cli import EXIT_FAILURE, EXIT_PARTIAL, EXIT_USAGE, main
from novelty.errors import InvalidInputError, UnknownNameError
from novelty.fileio import TMP_PREFIX, sha256_bytes, sha256_file
from novelty.flywheel.pools import Pool, PoolError, build_pool, image_suffix
from novelty.flywheel.selection import (
    DEFAULT_RADIUS,
    STRATEGIES,
    Selection,
    SelectionError,
    k_center,
    select,
    uncertainty_scores,
)


# --- controlled pools ---------------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_pool(
    emb: np.ndarray,
    *,
    p: np.ndarray | None = None,
    score: np.ndarray | None = None,
    proba: np.ndarray | None = None,
    train_distance: np.ndarray | None = None,
) -> Pool:
    n = emb.shape[0]
    p = np.linspace(0.01, 1.0, n) if p is None else np.asarray(p, dtype=float)
    ids = [f"img{i:03d}" for i in range(n)]
    return Pool(
        ids=ids,
        paths=[f"/data/{i}.jpg" for i in ids],
        sha256=[sha256_bytes(i.encode()) for i in ids],
        sources=[("folder:/data",)] * n,
        embeddings=_unit(emb),
        p_value=p,
        novelty=1 - p,
        score=-p if score is None else np.asarray(score, dtype=float),
        is_novel=p < 0.05,
        timestamps=[None] * n,
        alpha=0.05,
        detector_id="det-test",
        train_distance=train_distance,
        predictions=None if proba is None else [["dry", "wet"][int(np.argmax(r))] for r in proba],
        probabilities=proba,
        classes=["dry", "wet"] if proba is not None else [],
    )


def _reference_k_center(x: np.ndarray, k: int, covered: np.ndarray) -> list[int]:
    """Greedy k-center by brute force: the full distance matrix, argmax of the distance to the covered set."""
    x = _unit(x).astype(np.float64)
    d = 1.0 - x @ x.T
    dmin = covered.astype(np.float64).copy()
    picks = []
    for _ in range(k):
        i = int(np.argmax(dmin))
        picks.append(i)
        dmin = np.minimum(dmin, d[i])
    return picks


def test_k_center_matches_a_brute_force_reference(rng):
    x = rng.normal(size=(300, 24))
    train = _unit(rng.normal(size=(50, 24)))
    covered = (1.0 - _unit(x) @ train.T).min(axis=1)
    picks, dist = k_center(x, 20, covered=covered, radius=0.0)
    assert picks.tolist() == _reference_k_center(x, 20, covered)
    assert np.all(np.diff(dist) <= 1e-9)  # each pick is no farther than the one before (greedy k-center)
    np.testing.assert_allclose(dist[0], covered.max(), rtol=1e-6)


def test_k_center_starts_from_what_the_training_data_lacks():
    angles = np.deg2rad([10, 45, 90, 170, 175])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    covered = 1 - np.cos(angles)  # the training data is the direction at 0°
    pool = make_pool(x, train_distance=covered)
    sel = select(pool, 2, "diversity", radius=0.0)
    # 175° first; then 90°: 85° from the chosen one, 90° from the training data
    assert [it.id for it in sel.items] == ["img004", "img002"]
    assert "farthest from the training data and the chosen set (d=2.00)" in sel.items[0].reason
    assert sel.items[1].scores["distance"] == pytest.approx(1 - np.cos(np.deg2rad(85)), abs=1e-6)
    # without the training coverage the first centre is drawn by the seed, then the farthest from it
    free = select(make_pool(x), 2, "diversity", radius=0.0, seed=0)
    assert "first centre" in free.items[0].reason


def test_radius_drops_near_duplicates(rng):
    base = rng.normal(size=(2, 32))
    near_a = base[0] + 1e-3 * rng.normal(size=(5, 32))  # five near-duplicates of one image
    near_b = base[1] + 1e-3 * rng.normal(size=(5, 32))
    x = np.concatenate([near_a, near_b])
    pool = make_pool(x, train_distance=np.full(10, 0.5), proba=np.tile([[0.6, 0.4]], (10, 1)))
    with pytest.warns(UserWarning, match="near-duplicates"):
        sel = select(pool, 4, "diversity", radius=0.01)
    groups = {int(it.id[3:]) // 5 for it in sel.items}
    assert len(sel) == 2 and groups == {0, 1}  # one of each, the other eight skipped
    assert len(select(pool, 4, "diversity", radius=0.0)) == 4
    with pytest.warns(UserWarning, match="near-duplicates"):
        hybrid = select(pool, 4, "hybrid", radius=0.01, oversample=3)
    assert len(hybrid) == 2


def test_novelty_order_lowest_p_first_ties_by_raw_score(rng):
    p = np.array([0.5, 0.01, 0.01, 0.2, 0.9])
    score = np.array([1.0, 5.0, 7.0, 2.0, 0.5])
    pool = make_pool(rng.normal(size=(5, 8)), p=p, score=score)
    sel = select(pool, 4, "novelty")
    assert [it.id for it in sel.items] == ["img002", "img001", "img003", "img000"]
    assert sel.items[0].reason.startswith("p=0.01, novel") and "novelty rank 1 of 5" in sel.items[0].reason
    assert [it.rank for it in sel.items] == [1, 2, 3, 4]


def test_uncertainty_order_and_measures(rng):
    proba = np.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7], [0.5, 0.5], [0.99, 0.01]])
    pool = make_pool(rng.normal(size=(5, 8)), proba=proba)
    np.testing.assert_allclose(uncertainty_scores(pool), [0.1, 0.45, 0.3, 0.5, 0.01])
    np.testing.assert_allclose(uncertainty_scores(pool, "margin"), [0.2, 0.9, 0.6, 1.0, 0.02])
    for measure in ("least-confidence", "margin"):
        sel = select(pool, 3, "uncertainty", measure=measure)
        assert [it.id for it in sel.items] == ["img003", "img001", "img002"]
    top = sel.items[0]
    assert top.uncertainty == pytest.approx(1.0) and top.prediction == "dry" and top.probability == 0.5
    assert "head uncertain (p(dry)=0.50)" in top.reason
    sure = next(it for it in select(pool, 5, "novelty").items if it.id == "img004")
    assert "head sure (p(dry)=0.99)" in sure.reason
    with pytest.raises(UnknownNameError, match="uncertainty measure"):
        select(pool, 3, "uncertainty", measure="entropy")


def test_uncertainty_without_a_head_is_refused(rng):
    pool = make_pool(rng.normal(size=(5, 8)))
    with pytest.raises(SelectionError, match="has none"):
        select(pool, 2, "uncertainty")
    with pytest.warns(UserWarning, match="novelty alone"):
        assert len(select(pool, 2, "hybrid")) == 2


def _mixed_pool(rng: np.random.Generator) -> Pool:
    """A: most novel, head sure; B: head most uncertain, not novel; C: second on both; D: neither."""
    p = np.r_[np.linspace(0.001, 0.005, 5), np.full(5, 0.95), np.linspace(0.01, 0.014, 5), np.full(15, 0.9)]
    u = np.r_[np.full(5, 0.02), np.linspace(0.45, 0.49, 5), np.linspace(0.40, 0.44, 5), np.full(15, 0.35)]
    proba = np.stack([1 - u, u], axis=1)
    return make_pool(rng.normal(size=(30, 16)), p=p, proba=proba, train_distance=np.full(30, 0.3))


def test_hybrid_takes_what_is_both_novel_and_uncertain(rng):
    pool = _mixed_pool(rng)
    group = {**dict.fromkeys(range(5), "A"), **dict.fromkeys(range(5, 10), "B")}
    group.update({**dict.fromkeys(range(10, 15), "C"), **dict.fromkeys(range(15, 30), "D")})

    def picked(sel: Selection) -> set[str]:
        return {group[int(it.id[3:])] for it in sel.items}

    assert picked(select(pool, 5, "novelty")) == {"A"}
    assert picked(select(pool, 5, "uncertainty")) == {"B"}
    both = select(pool, 5, "hybrid", weights={"novelty": 0.5, "uncertainty": 0.5}, oversample=1, radius=0)
    assert picked(both) == {"C"}
    assert picked(select(pool, 5, "hybrid", weights={"novelty": 1.0, "uncertainty": 0.0}, oversample=1)) == {
        "A"
    }
    assert picked(select(pool, 5, "hybrid", weights={"novelty": 0.0, "uncertainty": 1.0}, oversample=1)) == {
        "B"
    }
    it = both.items[0]
    assert {"hybrid", "novelty_rank", "uncertainty_rank", "distance", "train_distance"} <= set(it.scores)
    assert "hybrid score" in it.reason and "top 5 of 30" in it.reason
    # with oversample, k-center chooses among the top oversample × budget by the weighted rank only
    wide = select(pool, 5, "hybrid", weights={"novelty": 0.5, "uncertainty": 0.5}, oversample=2, radius=0)
    hs = sorted(
        (it.scores["hybrid"] for it in select(pool, 30, "hybrid", oversample=1, radius=0).items), reverse=True
    )
    assert all(it.scores["hybrid"] >= hs[9] - 1e-12 for it in wide.items)
    assert both.weights == {"novelty": 0.5, "uncertainty": 0.5, "oversample": 1.0}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_is_deterministic_in_its_seed(rng, strategy):
    pool = _mixed_pool(rng)
    a = [it.id for it in select(pool, 8, strategy, seed=3).items]
    assert a == [it.id for it in select(pool, 8, strategy, seed=3).items]
    assert len(set(a)) == 8


def test_random_and_ties_depend_on_the_seed(rng):
    pool = make_pool(rng.normal(size=(50, 8)), p=np.full(50, 0.5), score=np.zeros(50))
    draws = {tuple(it.id for it in select(pool, 5, "random", seed=s).items) for s in range(5)}
    assert len(draws) == 5
    ties = {tuple(it.id for it in select(pool, 5, "novelty", seed=s).items) for s in range(5)}
    assert len(ties) > 1  # all equally novel: the seed breaks the ties


def test_budget_and_argument_errors(rng):
    pool = make_pool(rng.normal(size=(6, 8)))
    with pytest.warns(UserWarning, match="exceeds the pool"):
        assert len(select(pool, 10, "random")) == 6
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidInputError, match="budget"):
            select(pool, bad, "random")
    with pytest.raises(UnknownNameError, match="choose one of random, novelty"):
        select(pool, 2, "coreset")
    with pytest.raises(InvalidInputError, match="unknown weight"):
        select(pool, 2, "hybrid", weights={"novel": 1.0})
    with pytest.raises(InvalidInputError, match="positive"):
        select(pool, 2, "hybrid", weights={"novelty": 0.0, "uncertainty": 0.0})
    with pytest.raises(InvalidInputError, match="oversample"):
        select(pool, 2, "hybrid", oversample=0.5)
    with pytest.raises(InvalidInputError, match="radius"):
        select(pool, 2, "diversity", radius=-1)
    with pytest.raises(InvalidInputError, match="seed"):
        select(pool, 2, "random", seed=-1)


# --- the selection file -------------------------------------------------------------------------------------
def test_selection_round_trip_and_format(tmp_path, rng):
    pool = _mixed_pool(rng)
    sel = select(pool, 6, "hybrid", seed=2)
    path = sel.save(tmp_path / "sub" / "selection.json")
    assert not [p for p in path.parent.iterdir() if p.name.startswith(TMP_PREFIX)]
    data = json.loads(path.read_text())
    assert data["format"] == "novelty-selection" and data["format_version"] == 1
    assert {
        "created",
        "strategy",
        "budget",
        "seed",
        "weights",
        "detector_id",
        "model_version",
        "classes",
    } <= set(data)
    assert data["classes"] == ["dry", "wet"] and data["model_version"] == "det-test" and data["alpha"] == 0.05
    item = data["items"][0]
    for key in ("id", "path", "sha256", "source", "rank", "reason", "p_value", "novelty", "is_novel"):
        assert key in item
    for key in ("prediction", "probability", "uncertainty", "timestamp"):
        assert key in item
    back = Selection.load(path)
    assert back.items == sel.items
    assert (back.strategy, back.budget, back.seed, back.weights) == ("hybrid", 6, 2, sel.weights)
    assert back.pool_size == 30 and back.radius == DEFAULT_RADIUS


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="something"), "not a selection file"),
        (lambda d: d.update(format_version=9), "format_version 9 is not supported"),
        (lambda d: d.pop("detector_id"), "missing field 'detector_id'"),
        (lambda d: d.update(budget="5"), "'budget' must be an integer"),
        (lambda d: d.update(strategy="magic"), "unknown strategy"),
        (lambda d: d["items"][0].update(p_value="low"), r"items\[0\]: 'p_value' must be a finite number"),
        (lambda d: d["items"][0].update(path="rel/x.jpg"), "must be absolute"),
        (lambda d: d["items"][0].update(sha256="abc"), "64 lower-case hex"),
        (lambda d: d["items"][1].update(id=d["items"][0]["id"]), "appears more than once"),
        (lambda d: d["items"][1].update(rank=1), "ranks must be 1..n"),
        (lambda d: d["items"][0].update(is_novel="yes"), "'is_novel' must be true or false"),
        (lambda d: d.update(items={}), "'items' must be a list"),
    ],
)
def test_loading_a_bad_selection_names_what_is_wrong(tmp_path, rng, edit, message):
    path = select(_mixed_pool(rng), 3, "novelty").save(tmp_path / "s.json")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(SelectionError, match=message):
        Selection.load(path)


def test_loading_what_is_not_a_selection(tmp_path):
    with pytest.raises(SelectionError, match="no such selection file"):
        Selection.load(tmp_path / "none.json")
    (tmp_path / "x.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(SelectionError, match="not UTF-8 JSON"):
        Selection.load(tmp_path / "x.json")
    with pytest.raises(SelectionError, match="is a directory"):
        select(make_pool(np.eye(3)), 1, "random").save(tmp_path)


def test_image_suffix_from_name_or_bytes():
    assert image_suffix(b"\xff\xd8\xff\xe0", "") == "jpg"
    assert image_suffix(b"\x89PNG\r\n\x1a\n....", "x.bin") == "png"
    assert image_suffix(b"RIFF\x00\x00\x00\x00WEBPVP8", "") == "webp"
    assert image_suffix(b"whatever", "photo.JPEG") == "jpeg"
    assert image_suffix(b"whatever", "") == "img"


# --- real data: a detector with a head on textile embeddings ---------------------------------------------------
@pytest.fixture(scope="module")
def textile_detector(embedder, textile_paths, textile_embeddings, tmp_path_factory):
    """kNN + a nominal/defect head fitted on real embeddings, saved (so it has an artifact id)."""
    from novelty.detector import NoveltyDetector

    nominal = textile_embeddings["nominal"][:300]
    defects = textile_embeddings["global"][:100]
    x = np.concatenate([nominal, defects])
    labels = ["nominal"] * 300 + ["defect"] * 100
    ids = [str(p) for p in textile_paths["nominal"][:300] + textile_paths["global"][:100]]
    det = NoveltyDetector(embedder=embedder).fit_embeddings(x, labels, ids=ids)
    out = tmp_path_factory.mktemp("selection-detector") / "det"
    det.save(out)
    return det, out


@pytest.fixture
def inbox(tmp_path, textile_paths) -> Path:
    """A folder of 8 real textile images (held-out nominal and local defects) and one corrupt file."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    for p in textile_paths["nominal"][900:904] + textile_paths["local"][:4]:
        (folder / p.name).symlink_to(p)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _count_embedding(det, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = det.embedder.embed_with_errors

    def counting(images, **kw):
        calls.append(len(images))
        return real(images, **kw)

    monkeypatch.setattr(det.embedder, "embed_with_errors", counting)
    return calls


@pytest.mark.slow
def test_pool_from_a_folder_scores_every_readable_image(
    textile_detector, inbox, textile_paths, textile_embeddings
):
    det, _ = textile_detector
    pool = build_pool(det, [inbox])
    assert len(pool) == 8 and pool.n_skipped == 1 and "broken.jpg" in pool.skipped[0][0]
    name_of = {Path(p).name: i for i, p in enumerate(pool.paths)}
    i = name_of[textile_paths["nominal"][900].name]
    np.testing.assert_allclose(pool.embeddings[i], textile_embeddings["nominal"][900], atol=1e-5)
    assert pool.sha256[i] == sha256_file(textile_paths["nominal"][900]) and pool.ids[i] == pool.sha256[i][:16]
    assert pool.sources[i] == (f"folder:{inbox}",) and pool.timestamps[i] is not None
    ref = det.score_embeddings(pool.embeddings)
    np.testing.assert_allclose(pool.p_value, ref.p_value)
    assert pool.predictions == ref.predictions and pool.classes == ["defect", "nominal"]
    d, _ = det.index_.search(pool.embeddings, 1)
    np.testing.assert_allclose(pool.train_distance, d[:, 0] ** 2 / 2, atol=1e-6)
    assert pool.detector_id == det.artifact_id_
    sel = select(pool, 3, "hybrid")
    assert all(os.path.isabs(it.path) and os.path.isfile(it.path) for it in sel.items)
    assert sel.detector_id == det.artifact_id_ and sel.classes == ["defect", "nominal"]


@pytest.mark.slow
def test_pool_with_an_embedding_cache_embeds_each_image_once(textile_detector, inbox, tmp_path, monkeypatch):
    """The flywheel's pool grows with the flag store; with the training set's embedding cache only the new
    images are embedded, and the cache is the one the dataset's own embedding reads."""
    from novelty.flywheel.dataset import Dataset, Entry, embed_entries

    det, _ = textile_detector
    calls = _count_embedding(det, monkeypatch)
    ds = Dataset.create(tmp_path / "train", ["defect", "nominal"])
    first = build_pool(det, [inbox], embedding_cache=ds.embeddings_dir)
    assert calls == [9]  # 8 readable images and the broken one
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "copy.png").write_bytes(Path(first.paths[0]).read_bytes())  # the same bytes: cached
    again = build_pool(det, [inbox, extra], embedding_cache=ds.embeddings_dir)
    assert calls == [9, 1]  # only the broken image is tried again
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    np.testing.assert_array_equal(again.p_value, first.p_value)
    # labelled later, the images are not embedded again for training either
    p = Path(first.paths[0])
    e = Entry(id="x", sha256=first.sha256[0], path=str(p), label="nominal", source="t", labeller="human:a")
    real = det.embedder.embed
    monkeypatch.setattr(det.embedder, "embed", lambda *a, **k: pytest.fail("embedded again"))
    np.testing.assert_array_equal(embed_entries([e], det.embedder, ds.embeddings_dir)[0], first.embeddings[0])
    monkeypatch.setattr(det.embedder, "embed", real)


@pytest.mark.slow
def test_pool_from_results_reuses_their_embeddings(textile_detector, inbox, tmp_path, monkeypatch):
    from novelty.batch import score_inputs

    det, _ = textile_detector
    results = tmp_path / "results.parquet"
    summary = score_inputs(det, [inbox], results, embeddings=True)
    assert summary.n_errors == 1
    calls = _count_embedding(det, monkeypatch)
    pool = build_pool(det, [results])
    assert calls == [] and len(pool) == 8  # no image embedded again
    assert pool.n_skipped == 1 and "unreadable when scored" in pool.skipped[0][1]
    assert all(s == (f"results:{results.resolve()}",) for s in pool.sources)
    assert all(t is not None and t.endswith("Z") for t in pool.timestamps)  # the results' timestamp column
    again = build_pool(det, [inbox])
    order = [again.sha256.index(s) for s in pool.sha256]
    np.testing.assert_allclose(pool.embeddings, again.embeddings[order], atol=2e-3)  # float16 in the file
    np.testing.assert_allclose(pool.p_value, again.p_value[order], atol=0.02)


@pytest.mark.slow
def test_pool_from_results_of_another_detector_or_without_embeddings_embeds_again(
    textile_detector, inbox, tmp_path, monkeypatch, textile_embeddings, embedder
):
    from novelty.batch import score_inputs
    from novelty.detector import NoveltyDetector

    det, _ = textile_detector
    with_emb = tmp_path / "with.jsonl"
    score_inputs(det, [inbox], with_emb, embeddings=True)
    plain = tmp_path / "plain.csv"
    score_inputs(det, [inbox], plain)
    other = NoveltyDetector(embedder=embedder).fit_embeddings(textile_embeddings["nominal"][:200])
    calls = _count_embedding(other, monkeypatch)
    pool = build_pool(other, [with_emb])
    assert calls == [8] and len(pool) == 8 and pool.predictions is None
    calls.clear()
    pool = build_pool(det, [plain])
    assert len(pool) == 8 and pool.n_skipped == 1


@pytest.mark.slow
def test_pool_from_a_flag_store_and_an_archive_deduplicates_by_content(
    textile_detector, inbox, tmp_path, textile_paths
):
    from novelty.flags import SQLiteFlagStore

    det, _ = textile_detector
    store_dir = tmp_path / "flags"
    store = SQLiteFlagStore(store_dir)
    dup = textile_paths["local"][0].read_bytes()  # also in the inbox
    new = textile_paths["local"][10].read_bytes()
    f1, _ = store.add(dup, source="car-1", prediction="nominal", captured_at="2026-11-28T10:00:00Z")
    f2, _ = store.add(new, source="car-2")
    f3, _ = store.add(new, source="car-3")  # the same image from another car: one candidate, two flags
    store.close()
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a/frame.jpg", textile_paths["local"][20].read_bytes())
        z.writestr("b/copy.jpg", new)
    images = tmp_path / "sel" / "images"
    pool = build_pool(det, [inbox, archive], flags=str(store_dir / "flags.db"), images_dir=images)
    assert len(pool) == 10 and pool.n_skipped == 1
    by_sha = dict(zip(pool.sha256, range(len(pool)), strict=True))
    i = by_sha[sha256_bytes(dup)]
    assert pool.sources[i] == (f"folder:{inbox}", f"flag:{f1.id}") and pool.paths[i].startswith(str(inbox))
    j = by_sha[sha256_bytes(new)]
    assert pool.sources[j] == (f"folder:{archive}", f"flag:{f2.id}", f"flag:{f3.id}")
    assert pool.paths[j] == str((images / f"{sha256_bytes(new)}.jpg").resolve())
    assert Path(pool.paths[j]).read_bytes() == new
    k = by_sha[sha256_bytes(textile_paths["local"][20].read_bytes())]
    assert Path(pool.paths[k]).parent == images.resolve()
    only_flags = build_pool(det, flags=str(store_dir), images_dir=images)
    assert len(only_flags) == 2 and only_flags.timestamps[only_flags.sha256.index(sha256_bytes(dup))] == (
        "2026-11-28T10:00:00Z"
    )
    assert {s[0].split(":")[0] for s in only_flags.sources} == {"flag"}


def test_pool_errors_name_the_source(textile_detector, tmp_path, textile_paths):
    det, _ = textile_detector
    with pytest.raises(PoolError, match="no flag store"):
        build_pool(det, flags=str(tmp_path / "nowhere"), images_dir=tmp_path / "img")
    assert not (tmp_path / "nowhere").exists()  # not created by looking
    from novelty.flags import SQLiteFlagStore

    SQLiteFlagStore(tmp_path / "f").add(textile_paths["local"][0].read_bytes(), source="x")
    with pytest.raises(PoolError, match="pass images_dir"):
        build_pool(det, flags=str(tmp_path / "f"))
    with pytest.raises(InvalidInputError, match="no source of candidates"):
        build_pool(det, [])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PoolError, match="no readable candidate"):
        build_pool(det, [empty])
    not_results = tmp_path / "labels.csv"
    not_results.write_text("path,label\na.jpg,wet\n")
    with pytest.raises(PoolError, match="not a results file"):
        build_pool(det, [not_results])


# --- the command --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "0"], "argument --budget: must be an integer ≥ 1, got 0"),
        (["--budget", "5", "--seed", "-1"], "argument --seed: must be an integer ≥ 0, got -1"),
        (["--budget", "5", "--oversample", "nan"], "argument --oversample: must lie in [1, inf), got nan"),
        (["--budget", "5", "--strategy", "coreset"], "invalid choice"),
        (["--budget", "five"], "not an integer"),
        (["--budget", "5", "--radius", "-1"], "argument --radius: must lie in [0, 2], got -1"),
        (["--budget", "5", "--weights", "novel=1"], "give weights as"),
        (["--budget", "5"], "the following arguments are required: --strategy"),
    ],
)
def test_select_bad_arguments_exit_2(tmp_path, capsys, args, message):
    assert main(["select", str(tmp_path / "det"), str(tmp_path), *args]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_select_usage_errors_before_loading_anything(tmp_path, capsys):
    det = str(tmp_path / "no-detector")
    h = ["--strategy", "hybrid"]
    cases = [
        ([det, "--budget", "3", *h], "no source of candidates"),
        ([det, str(tmp_path / "missing"), "--budget", "3", *h], "no such file or folder"),
        ([det, str(tmp_path), "--budget", "3", *h, "--out", str(tmp_path)], "is a directory"),
        (
            [det, str(tmp_path), "--budget", "3", "--strategy", "random", "--weights", "novelty=1"],
            "hybrid only",
        ),
        (
            [det, str(tmp_path), "--budget", "3", "--strategy", "random", "--oversample", "2"],
            "hybrid only",
        ),
        (
            [det, str(tmp_path), "--budget", "3", "--strategy", "novelty", "--radius", "0.1"],
            "diversity or hybrid",
        ),
        ([det, str(tmp_path), "--budget", "3", *h, "--flags-since", "2026-01-01"], "needs --flags"),
    ]
    for args, message in cases:
        assert main(["select", *args]) == EXIT_USAGE, args
        err = capsys.readouterr().err
        assert err.startswith("novelty select: error:") and message in err
    assert main(["select", det, str(tmp_path), "--budget", "3", *h]) == EXIT_FAILURE  # no detector there
    assert "novelty select: error:" in capsys.readouterr().err


@pytest.mark.slow
def test_select_command_end_to_end(textile_detector, inbox, tmp_path, textile_paths, capsys):
    from novelty.flags import SQLiteFlagStore

    _, det_dir = textile_detector
    store = SQLiteFlagStore(tmp_path / "flags")
    flag, _ = store.add(textile_paths["global"][300].read_bytes(), source="car-9")
    store.close()
    out = tmp_path / "run" / "selection.json"
    code = main(
        [
            "select",
            str(det_dir),
            str(inbox),
            "--flags",
            str(tmp_path / "flags"),
            "--budget",
            "4",
            "--strategy",
            "hybrid",
            "--out",
            str(out),
        ]
    )
    assert code == EXIT_PARTIAL  # written, with the broken file left out
    text = capsys.readouterr().out
    assert (
        "rank  image" in text and "selected 4 of 9 candidates with hybrid" in text and "1 unreadable" in text
    )
    sel = Selection.load(out)
    assert len(sel) == 4 and sel.strategy == "hybrid" and sel.budget == 4
    assert all(os.path.isfile(it.path) for it in sel.items)
    flagged = (
        tmp_path
        / "run"
        / "selection.images"
        / f"{sha256_bytes(textile_paths['global'][300].read_bytes())}.jpg"
    )
    assert flagged.is_file() and f"are in {tmp_path / 'run' / 'selection.images'}" in text

    every = tmp_path / "r.json"
    args = ["select", str(det_dir), str(inbox), "--flags", str(tmp_path / "flags"), "--budget", "9"]
    assert main([*args, "--strategy", "random", "--seed", "1", "--out", str(every)]) == EXIT_PARTIAL
    sel = Selection.load(every)
    assert len(sel) == 9 and sel.seed == 1
    item = next(it for it in sel.items if it.source == f"flag:{flag.id}")
    assert item.path == str((tmp_path / "r.images" / flagged.name).resolve())  # the folder of this --out
    assert item.sources == (f"flag:{flag.id}",) and Path(item.path).read_bytes() == flagged.read_bytes()


@pytest.mark.slow
def test_select_uncertainty_needs_a_head(
    tmp_path, textile_paths, textile_embeddings, embedder, inbox, capsys
):
    from novelty.detector import NoveltyDetector

    plain = NoveltyDetector(embedder=embedder).fit_embeddings(textile_embeddings["nominal"][:200])
    plain.save(tmp_path / "plain")
    code = main(["select", str(tmp_path / "plain"), str(inbox), "--budget", "2", "--strategy", "uncertainty"])
    assert code == EXIT_FAILURE and "no condition head" in capsys.readouterr().err
    code = main(
        [
            "select",
            str(tmp_path / "plain"),
            str(inbox),
            "--budget",
            "2",
            "--strategy",
            "diversity",
            "--out",
            str(tmp_path / "d.json"),
        ]
    )
    assert code == EXIT_PARTIAL and Selection.load(tmp_path / "d.json").classes == []


def test_the_selection_table_shows_file_names_not_ids():
    """People recognise an image by its file name; the id stays in selection.json."""
    from novelty.flywheel.selection import SelectedItem, Selection, describe

    items = [
        SelectedItem(
            id=f"id-{i:04d}",
            path=f"/data/inbox/frame_{i:05d}_tunnel_entrance_camera_front_left.jpg"
            if i
            else "/data/inbox/a.png",
            sha256="0" * 64,
            source="folder:/data/inbox",
            rank=i + 1,
            reason="most novel",
            p_value=0.01,
            novelty=0.99,
            is_novel=True,
        )
        for i in range(3)
    ]
    sel = Selection(
        strategy="novelty",
        budget=3,
        seed=0,
        weights={},
        detector_id="d",
        model_version="m",
        classes=[],
        alpha=0.05,
        items=items,
    )
    text = describe(sel)
    assert "a.png" in text and "frame_00001_tunnel_entranc" in text and "…" in text
    assert "id-0001" not in text


@pytest.mark.slow
def test_flag_metadata_group_and_condition_reach_the_labelled_entries(
    textile_detector, tmp_path, textile_paths
):
    """A flag's metadata ``group``/``condition`` (what the client sends) travel through the pool, the selection
    file, the people's CSV and the import into the dataset's entries; a flag without them gives none."""
    from novelty.flags import SQLiteFlagStore
    from novelty.flywheel.dataset import Dataset
    from novelty.flywheel.labels.labelimport import import_labels
    from novelty.flywheel.labels.labelling import export_selection

    det, _ = textile_detector
    store = SQLiteFlagStore(tmp_path / "flags")
    a = textile_paths["local"][1].read_bytes()
    b = textile_paths["local"][2].read_bytes()
    c = textile_paths["local"][3].read_bytes()
    store.add(a, source="car-1", metadata={"group": "b7", "condition": "snow"})
    store.add(b, source="car-2", metadata={"group": 12, "other": "x"})  # a number becomes its text
    store.add(c, source="car-3", metadata={"group": ["not", "text"], "condition": " "})
    store.close()
    pool = build_pool(det, flags=str(tmp_path / "flags"), images_dir=tmp_path / "img")
    by_sha = {s: i for i, s in enumerate(pool.sha256)}
    assert pool.groups is not None and pool.conditions is not None
    assert pool.groups[by_sha[sha256_bytes(a)]] == "b7" and pool.conditions[by_sha[sha256_bytes(a)]] == "snow"
    assert pool.groups[by_sha[sha256_bytes(b)]] == "12" and pool.conditions[by_sha[sha256_bytes(b)]] is None
    assert pool.groups[by_sha[sha256_bytes(c)]] is None and pool.conditions[by_sha[sha256_bytes(c)]] is None
    assert pool.subset([by_sha[sha256_bytes(a)]]).groups == ["b7"]

    sel = select(pool, 3, "random", seed=0)
    sel.save(tmp_path / "selection.json")
    items = {it.sha256: it for it in Selection.load(tmp_path / "selection.json").items}
    assert (items[sha256_bytes(a)].group, items[sha256_bytes(a)].condition) == ("b7", "snow")
    assert (items[sha256_bytes(c)].group, items[sha256_bytes(c)].condition) == (None, None)

    export_selection(tmp_path / "selection.json", tmp_path / "export", format="csv", classes=["good", "bad"])
    rows = (tmp_path / "export" / "labels.csv").read_text().splitlines()
    assert rows[0].endswith("novelty,group,condition,label")
    # a person fills the label column only; the import takes group and condition from the selection
    filled = [rows[0]] + [r + "good" for r in rows[1:]]
    (tmp_path / "done.csv").write_text("\n".join(filled) + "\n")
    ds = Dataset.create(tmp_path / "ds", ["good", "bad"])
    import_labels(ds, tmp_path / "done.csv", tmp_path / "selection.json", format="csv", labeller="ann")
    got = {e.sha256: (e.group, e.condition) for e in ds.entries()}
    assert got == {
        sha256_bytes(a): ("b7", "snow"),
        sha256_bytes(b): ("12", None),
        sha256_bytes(c): (None, None),
    }
