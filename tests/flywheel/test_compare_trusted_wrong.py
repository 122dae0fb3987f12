"""The images each side of a comparison trusted and got wrong: which are recorded (by hand-made outputs and by
``compare`` on a dataset with mislabelled images), the file round trip and its reader, the report's gallery and
the CLI table — and that the gate never sees them."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from retrain_support import CLASSES, Item, add_items, synthetic, write_pngs  # tests/retrain_support.py

import novelty
from novelty.flywheel.comparison.compare import (
    TRUSTED_WRONG_SHOWN,
    Comparison,
    ComparisonError,
    GateRule,
    ModelOutputs,
    compare,
    compare_outputs,
    load_comparison,
    trusted_wrong,
)
from novelty.flywheel.dataset import Dataset, embed_entries

NOW = "2026-12-01T12:00:00Z"
N_CLEAN, N_TUNNEL = 60, 40


# --- a constructed case: heads wrong on known images ---------------------------------------------------
def _outputs(y, pred, trusted, competence=None):
    n = y.size
    p = np.linspace(0.06, 1.0, n)  # nothing flagged: the gate's false alarms stay at 0
    return ModelOutputs(
        p_value=p,
        alpha=0.05,
        predictions=np.array(pred),
        confidence=np.full(n, 0.9),
        classes=list(CLASSES),
        trusted=np.asarray(trusted, dtype=bool),
        competence=competence,
    )


@pytest.fixture
def case():
    """100 images (60 clean, 40 tunnel). The champion is wrong on ``wrong1`` (trusted on all but two of them,
    plus wrong and untrusted elsewhere); the challenger is wrong on ``wrong2``, all trusted."""
    n = N_CLEAN + N_TUNNEL
    cond = np.array(["clean"] * N_CLEAN + ["tunnel"] * N_TUNNEL)
    y = np.array([CLASSES[i % 2] for i in range(n)])
    other = np.where(y == CLASSES[0], CLASSES[1], CLASSES[0])
    wrong1 = [3, 10, 61, 62, 63, 64, 65, 66, 70, 80]  # trusted and wrong: all but 10 and 80
    untrusted1 = [10, 80, 20, 21]  # 20, 21: right and untrusted
    wrong2 = [5, 90]
    pred1, pred2 = y.copy(), y.copy()
    pred1[wrong1], pred2[wrong2] = other[wrong1], other[wrong2]
    t1 = np.ones(n, dtype=bool)
    t1[untrusted1] = False
    competence = np.linspace(0.5, 0.99, n)[::-1].copy()  # decreasing with the position
    competence[[64, 66]] = [0.999, 0.998]  # two tunnel errors the champion was surest of
    o1 = _outputs(y, pred1, t1, competence)
    o2 = _outputs(y, pred2, np.ones(n, dtype=bool))  # no competence: the legacy rule
    ids = [f"img{i:03d}" for i in range(n)]
    paths = [f"/data/test/img{i:03d}.png" for i in range(n)]
    return SimpleNamespace(
        n=n,
        cond=cond,
        y=y,
        o1=o1,
        o2=o2,
        ids=ids,
        paths=paths,
        competence=competence,
        expected1=sorted(set(wrong1) - set(untrusted1)),
        expected2=wrong2,
    )


def _comparison(case, *, tw=True) -> Comparison:
    rule = GateRule()
    rows, checks = compare_outputs(case.o1, case.o2, case.y, case.cond, n_boot=200, rule=rule)
    return Comparison(
        rows=rows,
        checks=checks,
        champion={"artifact_id": "a" * 64, "alpha": 0.05, "classes": list(CLASSES)},
        challenger={"artifact_id": "b" * 64, "alpha": 0.05, "classes": list(CLASSES)},
        settings={"nominal": ["clean"], "n_boot": 200, "seed": 0, "level": 0.95, "gate": rule.to_json()},
        trusted_wrong=trusted_wrong(case.o1, case.o2, case.y, case.cond, ids=case.ids, paths=case.paths)
        if tw
        else None,
    )


def test_the_trusted_and_wrong_images_are_recorded_sorted(case):
    tw = trusted_wrong(case.o1, case.o2, case.y, case.cond, ids=case.ids, paths=case.paths)
    champ, chall = tw["champion"], tw["challenger"]
    assert champ["n"] == len(case.expected1) == 8 and chall["n"] == 2
    assert champ["by_condition"] == {"clean": 1, "tunnel": 7}  # nominal first, as the rows
    assert chall["by_condition"] == {"clean": 1, "tunnel": 1}
    assert sorted(it["id"] for it in champ["items"]) == [case.ids[i] for i in case.expected1]
    # by condition, then competence descending (64 and 66 first among tunnel, then by position)
    assert [it["id"] for it in champ["items"]] == [case.ids[i] for i in (3, 64, 66, 61, 62, 63, 65, 70)]
    first = champ["items"][0]
    assert first == {
        "id": "img003",
        "path": "/data/test/img003.png",
        "slice": "test",
        "condition": "clean",
        "label": case.y[3],
        "prediction": CLASSES[0] if case.y[3] == CLASSES[1] else CLASSES[1],
        "competence": pytest.approx(case.competence[3], abs=1e-6),
    }
    assert [it["id"] for it in chall["items"]] == ["img005", "img090"]
    assert all(it["competence"] is None for it in chall["items"])  # no competence: none recorded
    # defaults: positions as ids, no paths
    bare = trusted_wrong(case.o1, case.o2, case.y, case.cond)
    assert [it["id"] for it in bare["challenger"]["items"]] == ["5", "90"]
    assert bare["challenger"]["items"][0]["path"] is None


def test_the_cap_keeps_the_count_and_shares_between_conditions(case):
    tw = trusted_wrong(case.o1, case.o2, case.y, case.cond, ids=case.ids, limit=3)
    champ = tw["champion"]
    assert champ["n"] == 8 and sum(champ["by_condition"].values()) == 8  # the counts are of all of them
    # the clean error is kept although tunnel has seven more competent ones
    assert [it["id"] for it in champ["items"]] == ["img003", "img064", "img066"]
    assert trusted_wrong(case.o1, case.o2, case.y, case.cond, limit=0)["champion"]["items"] == []
    assert TRUSTED_WRONG_SHOWN == 48
    many = trusted_wrong(case.o1, case.o2, case.y, case.cond)
    assert len(many["champion"]["items"]) == 8  # under the default cap: every one


def test_without_a_head_or_a_trust_decision_there_is_no_section(case):
    headless = ModelOutputs(p_value=case.o1.p_value, alpha=0.05)
    assert trusted_wrong(headless, case.o2, case.y, case.cond) is None
    assert trusted_wrong(case.o1, headless, case.y, case.cond) is None
    untrusting = replace(case.o2, trusted=None)
    assert trusted_wrong(case.o1, untrusting, case.y, case.cond) is None
    with pytest.raises(novelty.errors.InvalidInputError, match="ids has 3 entries for 100 images"):
        trusted_wrong(case.o1, case.o2, case.y, case.cond, ids=["a", "b", "c"])


def test_the_section_round_trips_and_old_files_still_load_and_rejudge(case, tmp_path):
    c = _comparison(case)
    path = c.save(tmp_path / "comparison.json")
    doc = json.loads(path.read_text())
    assert doc["trusted_wrong"]["champion"]["n"] == 8
    seen = load_comparison(path)
    assert seen.comparison.trusted_wrong == c.trusted_wrong
    assert seen.problems() == []
    assert seen.comparison.to_json() == doc
    # a file written before the section existed: no key at all
    del doc["trusted_wrong"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    was = load_comparison(old)
    assert was.comparison.trusted_wrong is None
    assert was.problems() == [] and was.passed is seen.passed
    assert was.comparison.rejudge() == seen.comparison.rejudge() == []
    assert [ch.to_json() for ch in was.comparison.checks] == doc["checks"]


def test_the_gate_does_not_see_the_section(case, tmp_path):
    c = _comparison(case)
    without = _comparison(case, tw=False)
    assert c.passed is without.passed and c.reasons == without.reasons
    # a file whose section says the challenger got everything wrong is judged exactly as before
    doc = c.to_json()
    doc["trusted_wrong"]["challenger"] = {
        "n": 100,
        "by_condition": {"clean": 60, "tunnel": 40},
        "items": [],
    }
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    seen = load_comparison(path)
    assert seen.problems() == [] and seen.passed is c.passed
    assert seen.comparison.reasons == c.reasons


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda tw: tw.pop("challenger"), "exactly 'champion' and 'challenger'"),
        (lambda tw: tw["champion"].update(n=-1), r"trusted_wrong.champion'.n must be an integer"),
        (lambda tw: tw["champion"].update(n=9), "add up to 8, not n = 9"),
        (lambda tw: tw["champion"]["by_condition"].update(clean="1"), "by_condition must map"),
        (lambda tw: tw["challenger"].update(items={}), "items must be a list"),
        (lambda tw: tw["challenger"]["items"][0].update(label=3), r"items\[0\]: label must be text"),
        (lambda tw: tw["challenger"]["items"][0].update(path=7), r"items\[0\]: path must be text"),
        (lambda tw: tw["challenger"]["items"][1].update(condition="ice"), "'ice' is not in by_condition"),
        (lambda tw: tw["champion"]["items"][0].update(competence="high"), "expected a number or null"),
        (lambda tw: tw["champion"]["items"].append({}), "items must be a list of at most n = 8"),
    ],
)
def test_a_bad_section_is_refused_with_what_is_wrong(case, tmp_path, edit, message):
    doc = _comparison(case).to_json()
    edit(doc["trusted_wrong"])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ComparisonError, match=message) as e:
        load_comparison(path)
    assert str(path) in str(e.value)


def test_report_shows_counts_and_a_gallery_with_placeholders(case, tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    paths = list(case.paths)
    for i in (3, 64):  # two of the champion's images exist here; the rest are missing at report time
        paths[i] = str(folder / f"img{i:03d}.png")
        Image.fromarray(np.full((40, 60, 3), 90, dtype=np.uint8)).save(paths[i])
    c = _comparison(replace_paths(case, paths))
    html = c.write_report(tmp_path / "comparison.html").read_text()
    assert "<h2>Trusted but wrong</h2>" in html
    assert "fewer trusted-but-wrong images is safer" in html
    assert "auto-accept and a production caller would have acted on" in html
    assert "<h3>champion: 8 trusted but wrong" in html and "<h3>challenger: 2 trusted but wrong" in html
    assert '<td class="name">tunnel</td><td class="num">7</td><td class="num">1</td>' in html
    assert html.count('src="data:image/jpeg;base64,') == 2  # the two files that exist
    assert html.count('<div class="ph"') == 8  # the others: a placeholder saying why …
    assert "/data/test/img090.png" in html  # … next to the path
    assert "http://" not in html and "https://" not in html
    # without the section (an old file, or no heads): no gallery, and the report still renders
    old = _comparison(case, tw=False).write_report(tmp_path / "old.html").read_text()
    assert "Trusted but wrong" not in old and "<h2>Per condition</h2>" in old


def replace_paths(case, paths):
    return SimpleNamespace(**{**vars(case), "paths": paths})


def test_table_has_one_line_per_side(case):
    lines = _comparison(case).table().splitlines()
    assert "champion:    trusted but wrong: 8 (clean: 1, tunnel: 7)" in lines
    assert "challenger:  trusted but wrong: 2 (clean: 1, tunnel: 1)" in lines
    assert "trusted but wrong" not in _comparison(case, tw=False).table()


# --- compare() on a dataset with mislabelled test images ------------------------------------------------
@pytest.fixture(scope="module")
def mislabelled(tmp_path_factory, embedder):
    """Two detectors with a head (seeds 0 and 1, the legacy rule: trusted = not novel) fitted on clean
    synthetic embeddings; a clean test dataset where ten images carry the other label: the heads, right on the
    rest, are wrong on exactly those."""
    root = tmp_path_factory.mktemp("trusted-wrong")
    rng = np.random.default_rng(5)
    y_fit = [CLASSES[i % 2] for i in range(240)]
    x_fit = synthetic(rng, y_fit, ["clean"] * 240, embedder.dim)
    dets = [
        novelty.NoveltyDetector(
            embedder=embedder,
            scorers=("knn",),
            head={"max_epochs": 20},
            calibration_fraction=0.3,
            trust="not-novel",
            seed=seed,
        ).fit_embeddings(x_fit, y_fit)
        for seed in (0, 1)
    ]
    test = Dataset.create(root / "test", CLASSES)
    y = [CLASSES[i % 2] for i in range(N_CLEAN)]
    x = synthetic(rng, y, ["clean"] * N_CLEAN, embedder.dim)
    flipped = list(range(0, N_CLEAN, 6))
    shown = [CLASSES[1 - CLASSES.index(v)] if i in flipped else v for i, v in enumerate(y)]
    items = [Item(v, "clean", None, NOW, x[i]) for i, v in enumerate(shown)]
    add_items(test, items, write_pngs(root / "img", N_CLEAN, rng), embedder=embedder)
    entries = test.entries()
    return SimpleNamespace(test=test, dets=dets, flipped={entries[i].id for i in flipped}, entries=entries)


@pytest.mark.filterwarnings("ignore:calibration holds only")
def test_compare_records_the_mislabelled_images_with_their_paths(mislabelled, embedder, tmp_path):
    d1, d2 = mislabelled.dets
    c = compare(d1, d2, mislabelled.test, n_boot=200, embedder=embedder)
    assert c.has_head and c.trusted_wrong is not None
    by_id = {e.id: e for e in mislabelled.entries}
    for who in ("champion", "challenger"):
        side = c.trusted_wrong[who]
        ids = {it["id"] for it in side["items"]}
        assert ids and ids <= mislabelled.flipped  # only the mislabelled images …
        assert side["n"] == len(side["items"]) == side["by_condition"]["clean"]
        for it in side["items"]:
            e = by_id[it["id"]]
            assert it["path"] == e.path and it["label"] == e.label and it["prediction"] != e.label
            assert it["condition"] == "clean" and it["slice"] == "test" and it["competence"] is None
    # … and every mislabelled image either side trusted (the legacy rule: not flagged)
    res = d1.score_embeddings(embed_entries(mislabelled.entries, embedder, mislabelled.test.embeddings_dir))
    trusted_ids = {e.id for e, t in zip(mislabelled.entries, res.trusted, strict=True) if t}
    assert {it["id"] for it in c.trusted_wrong["champion"]["items"]} == mislabelled.flipped & trusted_ids
    assert "trusted but wrong: " in c.table()
    html = c.write_report(tmp_path / "c.html").read_text()
    assert html.count('src="data:image/jpeg;base64,') >= 1  # the dataset's files exist: real thumbnails
    again = Comparison.from_json(json.loads(c.save(tmp_path / "c.json").read_text()))  # detectors not saved
    assert again.trusted_wrong == c.trusted_wrong and again.rejudge() == []
