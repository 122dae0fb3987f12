"""Comparing a champion and a challenger: the statistics against references, the gate, the report, the CLI,
and — on real frames of the windshield scenario — the ceteris-paribus check (retraining with no new labels
is not promoted) and a challenger that learnt tunnels (promoted)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from retrain_support import CLASSES, Item, add_items, synthetic, write_pngs  # tests/retrain_support.py

import novelty
from novelty.artifact import read_artifact
from novelty.cli import main
from novelty.flywheel.comparison.compare import (
    Comparison,
    ComparisonError,
    GateRule,
    ModelOutputs,
    bootstrap_weights,
    compare,
    compare_outputs,
    expected_calibration_error,
    mcnemar_exact,
    parse_dataset_arg,
)
from novelty.flywheel.comparison.paired import weighted_auroc
from novelty.flywheel.dataset import Dataset, embed_entries
from novelty.flywheel.record import TrainingRecord, config_hash, detector_params
from novelty.flywheel.retrain import retrain, save_retrained
from novelty.formatting import format_p_value
from novelty.metrics import auroc

CHROMIUM = Path("/usr/bin/chromium")
NOW = "2026-12-01T12:00:00Z"


# --- statistics against references ------------------------------------------------------------------
@pytest.mark.parametrize(
    "b,c", [(0, 0), (0, 1), (3, 3), (1, 9), (12, 30), (40, 41), (0, 25), (200, 150), (5000, 5200)]
)
def test_mcnemar_exact_is_the_two_sided_binomial_test(b, c):
    from scipy.stats import binomtest

    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def test_ece_against_a_plain_loop_and_weights_as_repetitions(rng):
    correct = rng.random(500) < 0.8
    conf = np.clip(rng.beta(5, 1.5, 500), 0.5, 1.0)
    conf[:5] = [0.0 + 1e-12, 1 / 15, 2 / 15, 1.0, 0.5]  # edges of bins

    def loop(c, p, bins=15):
        total = 0.0
        for k in range(bins):
            lo, hi = k / bins, (k + 1) / bins
            sel = (p > lo) & (p <= hi) if k else (p >= 0) & (p <= hi)
            if sel.any():
                total += sel.sum() / p.size * abs(c[sel].mean() - p[sel].mean())
        return total

    assert expected_calibration_error(correct, conf) == pytest.approx(loop(correct, conf), abs=1e-12)
    w = rng.integers(0, 4, 500)
    rep = np.repeat(np.arange(500), w)
    assert expected_calibration_error(correct, conf, weights=w) == pytest.approx(
        loop(correct[rep], conf[rep]), abs=1e-12
    )
    assert expected_calibration_error(np.ones(10), np.ones(10)) == 0.0


def test_weighted_auroc_against_the_unweighted_one(rng):
    neg = rng.normal(size=200).round(1)  # ties on purpose
    pos = rng.normal(0.7, 1, size=150).round(1)
    ones = weighted_auroc(np.ones((1, 200)), np.ones((1, 150)), neg, pos)[0]
    assert ones == pytest.approx(auroc(neg, pos), abs=1e-12)
    from sklearn.metrics import roc_auc_score

    assert ones == pytest.approx(roc_auc_score(np.r_[np.zeros(200), np.ones(150)], np.r_[neg, pos]))
    wn, wp = rng.integers(0, 3, 200).astype(float), rng.integers(0, 3, 150).astype(float)
    got = weighted_auroc(wn[None], wp[None], neg, pos)[0]
    assert got == pytest.approx(
        auroc(np.repeat(neg, wn.astype(int)), np.repeat(pos, wp.astype(int))), abs=1e-12
    )


def test_bootstrap_weights_resample_clusters_within_strata():
    strata = np.array(["a"] * 40 + ["b"] * 20)
    units = np.array([f"g{i // 4}" for i in range(40)] + [f"h{i // 5}" for i in range(20)])
    W = bootstrap_weights(strata, units, 300, np.random.default_rng(0))
    assert W.shape == (300, 60)
    np.testing.assert_array_equal(W[:, :40].sum(1), 40)  # equal cluster sizes: each stratum keeps its size
    np.testing.assert_array_equal(W[:, 40:].sum(1), 20)
    for g in range(10):  # the images of a cluster are drawn together
        block = W[:, 4 * g : 4 * g + 4]
        assert (block == block[:, :1]).all()
    assert W[:, 0].mean() == pytest.approx(1.0, abs=0.2)
    again = bootstrap_weights(strata, units, 300, np.random.default_rng(0))
    np.testing.assert_array_equal(W, again)


# --- the gate on model outputs ----------------------------------------------------------------------
def outputs(rng, y, cond, acc, *, alpha=0.05, shift=3.0, fa=None, head=True):
    """A model's outputs with accuracy ``acc`` per condition (a dict or one number) and p-values that put
    non-clean images low (``p ** shift``); ``fa`` forces the share of clean images flagged."""
    n = y.size
    acc_of = acc if isinstance(acc, dict) else dict.fromkeys(set(cond), acc)
    right = np.array([rng.random() < acc_of[c] for c in cond])
    pred = np.where(right, y, np.where(y == "dry", "wet", "dry"))
    p = rng.random(n)
    p[cond != "clean"] **= shift
    if fa is not None:
        clean = np.flatnonzero(cond == "clean")
        p[clean] = np.where(np.arange(clean.size) < fa * clean.size, 0.001, 0.5)
    if not head:
        return ModelOutputs(p_value=p, alpha=alpha)
    conf = np.clip(rng.normal(0.85, 0.08, n), 0.5, 1.0)
    return ModelOutputs(p_value=p, alpha=alpha, predictions=pred, confidence=conf, classes=list(CLASSES))


@pytest.fixture
def setup(rng):
    cond = np.array(["clean"] * 300 + ["tunnel"] * 150 + ["ice"] * 150)
    y = rng.choice(list(CLASSES), cond.size)
    groups = [f"{c}{i // 5}" for i, c in enumerate(cond)]
    return SimpleNamespace(cond=cond, y=y, groups=groups)


def run(s, a, b, **kw):
    kw.setdefault("n_boot", 400)
    return compare_outputs(a, b, s.y, s.cond, groups=s.groups, **kw)


def test_identical_models_give_zero_differences_and_no_promotion(setup, rng):
    a = outputs(rng, setup.y, setup.cond, 0.8)
    rows, checks = run(setup, a, a)
    assert [r.name for r in rows] == ["all", "clean", "ice", "tunnel"]  # nominal conditions first
    for r in rows:
        for m in r.metrics.values():
            assert m.diff == 0 and m.ci_low == 0 and m.ci_high == 0
        assert r.mcnemar == {"b": 0, "c": 0, "p_value": 1.0}
    assert set(rows[0].metrics) == {"accuracy", "ece", "auroc", "false_alarm_rate"}
    assert "auroc" not in rows[1].metrics and "false_alarm_rate" not in rows[2].metrics
    by = {c.name: c for c in checks}
    assert by["gain"].passed is False and by["significant"].passed is False
    assert by["no condition worse"].passed and by["false alarms"].passed
    assert rows[0].n == 600 and rows[0].n_units == 120


def test_a_better_challenger_passes_and_each_failure_is_named(setup):
    rng = np.random.default_rng(1)
    champ = outputs(rng, setup.y, setup.cond, {"clean": 0.95, "tunnel": 0.6, "ice": 0.9})
    better = outputs(rng, setup.y, setup.cond, {"clean": 0.95, "tunnel": 0.97, "ice": 0.9})
    rows, checks = run(setup, champ, better)
    c = Comparison(rows=rows, checks=checks, champion={}, challenger={}, settings={})
    assert c.passed, c.reasons
    tunnel = c.row("tunnel").metrics["accuracy"]
    assert tunnel.diff > 0.25 and tunnel.ci_low > 0.15
    assert c.row("all").mcnemar["p_value"] < 1e-6
    assert all(line.startswith(("PASS", "INFO")) for line in c.reasons)
    # the same gain, but ice worse by more than the margin
    worse_ice = outputs(rng, setup.y, setup.cond, {"clean": 0.95, "tunnel": 0.97, "ice": 0.8})
    _, checks = run(setup, champ, worse_ice)
    bad = {ch.name: ch for ch in checks if ch.passed is False}
    assert list(bad) == ["no condition worse"] and "ice" in bad["no condition worse"].message
    # the gain, but the challenger flags a fifth of the clean images
    noisy = outputs(rng, setup.y, setup.cond, {"clean": 0.95, "tunnel": 0.97, "ice": 0.9}, fa=0.2)
    _, checks = run(setup, champ, noisy)
    bad = {ch.name: ch for ch in checks if ch.passed is False}
    assert list(bad) == ["false alarms"] and "0.200 of 300 nominal" in bad["false alarms"].message
    # a bigger minimum gain than the challenger reaches
    _, checks = run(setup, champ, better, rule=GateRule(min_gain=0.2))
    assert [ch.name for ch in checks if ch.passed is False] == ["gain"]


def test_gate_cannot_be_fooled_by_noise(setup):
    """Two models of equal accuracy that err on different images: the gate promotes (almost) never."""
    promoted = 0
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        a = outputs(rng, setup.y, setup.cond, 0.85)
        b = outputs(rng, setup.y, setup.cond, 0.85)
        _, checks = run(setup, a, b, n_boot=200, seed=seed)
        promoted += all(ch.passed is not False for ch in checks)
    assert promoted <= 2, promoted  # ≤ 5 % of 40 (McNemar and the interval both at 5 %, one-sided gain)


def test_without_a_head_the_gate_judges_novelty(setup, rng):
    champ = outputs(rng, setup.y, setup.cond, 0.8, shift=1.5, head=False)
    sharper = outputs(rng, setup.y, setup.cond, 0.8, shift=6.0, head=False)
    rows, checks = run(setup, champ, sharper)
    assert all("accuracy" not in r.metrics and "ece" not in r.metrics and r.mcnemar is None for r in rows)
    by = {c.name: c for c in checks}
    assert by["gain"].values["metric"] == "auroc" and by["gain"].passed and by["significant"].passed
    assert "McNemar" not in by["significant"].message
    assert by["no condition worse"].values["judged"] == ["ice", "tunnel"]  # nominal rows have no AUROC
    # a champion with a head against a challenger without one: novelty only, too
    rows, _ = run(setup, outputs(rng, setup.y, setup.cond, 0.8), sharper)
    assert "accuracy" not in rows[0].metrics


def test_refusals(setup, rng):
    a = outputs(rng, setup.y, setup.cond, 0.8)
    y = setup.y.astype(object)
    y[:3] = "slush"
    with pytest.raises(ComparisonError, match=r"labels the champion's head does not know: 'slush'"):
        compare_outputs(a, a, y, setup.cond, n_boot=100)
    with pytest.raises(ComparisonError, match=r"no test image has a nominal condition.*clean, ice, tunnel"):
        compare_outputs(a, a, setup.y, setup.cond, nominal=("daylight",), n_boot=100)
    rows, _ = compare_outputs(a, a, setup.y, setup.cond, nominal="clean", n_boot=100)  # one name, not letters
    assert rows[1].name == "clean" and rows[1].nominal
    with pytest.raises(novelty.errors.InvalidInputError, match="alpha"):
        ModelOutputs.from_detector(None, None, alpha=2.0)  # type: ignore[arg-type]
    no_cond = compare_outputs(a, a, setup.y, [None] * setup.y.size, nominal=("unspecified",), n_boot=100)
    assert [r.name for r in no_cond[0]] == ["all", "unspecified"]
    holes = ModelOutputs(p_value=np.where(np.arange(600) == 5, np.nan, a.p_value), alpha=0.05)
    with pytest.raises(ComparisonError, match="no p-value"):
        compare_outputs(holes, holes, setup.y, setup.cond, n_boot=100)
    with pytest.raises(ComparisonError, match="no images"):
        compare_outputs(a, a, [], [], n_boot=100)
    with pytest.raises(novelty.errors.InvalidInputError, match="n_boot"):
        compare_outputs(a, a, setup.y, setup.cond, n_boot=10)


def test_json_report_and_the_registry_reads_the_verdict(setup, tmp_path):
    rng = np.random.default_rng(1)
    champ = outputs(rng, setup.y, setup.cond, {"clean": 0.95, "tunnel": 0.6, "ice": 0.9})
    better = outputs(rng, setup.y, setup.cond, {"clean": 0.95, "tunnel": 0.97, "ice": 0.9})
    cond = setup.cond.astype(object)
    cond[cond == "ice"] = '<script>alert("x")</script>'
    rows, checks = compare_outputs(champ, better, setup.y, cond, groups=setup.groups, n_boot=200)
    ids = {"champion": "a" * 64, "challenger": "b" * 64}
    c = Comparison(
        rows=rows,
        checks=checks,
        champion={
            "path": "champ&<dir>",
            "artifact_id": ids["champion"],
            "config_hash": "h",
            "alpha": 0.05,
            "classes": list(CLASSES),
            "backbone": "tf_efficientnet_lite0",
        },
        challenger={
            "path": "chall",
            "artifact_id": ids["challenger"],
            "config_hash": "h",
            "alpha": 0.05,
            "classes": list(CLASSES),
            "backbone": "tf_efficientnet_lite0",
        },
        settings={
            "nominal": ["clean"],
            "n_boot": 200,
            "seed": 0,
            "level": 0.95,
            "alpha": None,
            "ece_bins": 15,
            "gate": GateRule().to_json(),
        },
        test={"path": "/data/test", "version": 1, "identity": "c" * 64, "n": 600},
        embeddings={"shared": True},
    )
    data = json.loads(c.save(tmp_path / "comparison.json").read_text())
    assert data["format"] == "novelty-comparison" and data["passed"] is True
    assert data["rows"][0]["metrics"]["accuracy"]["ci"][0] > 0
    from novelty.flywheel.comparison.compare import load_comparison

    seen = load_comparison(tmp_path / "comparison.json")
    assert seen.passed and seen.challenger_id == ids["challenger"] and seen.champion_id == ids["champion"]
    assert seen.problems() == []  # the numbers judged again give the recorded checks and verdict
    again = seen.comparison
    assert [r.to_json() for r in again.rows] == data["rows"] and [c.to_json() for c in again.checks] == data[
        "checks"
    ]
    html = c.write_report(tmp_path / "comparison.html").read_text()
    assert "PROMOTE the challenger" in html
    assert (
        '<script>alert("x")</script>' not in html
        and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    )
    assert "champ&amp;&lt;dir&gt;" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    assert html.count('<svg class="ci"') == sum(len(r.metrics) for r in rows)
    assert "tunnel" in html and "McNemar" in html
    for r in rows:  # McNemar's p-values written by the one rule of every report
        if r.mcnemar is not None:
            assert f'<td class="num">{format_p_value(r.mcnemar["p_value"])}</td>' in html


def test_parse_dataset_arg():
    assert parse_dataset_arg("data/test") == ("data/test", None)
    assert parse_dataset_arg("data/test:3") == ("data/test", 3)
    assert parse_dataset_arg("C:/x") == ("C:/x", None)
    assert parse_dataset_arg("a:b:12") == ("a:b", 12)


# --- compare() on datasets (synthetic embeddings in the datasets' caches) -------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory, embedder):
    """A training dataset (clean; version 2 adds tunnel images), a test dataset (clean + tunnel), a new
    slice, and three headless kNN detectors: champion (version 1), a retrain of it with seed 1, and one
    with alpha 0.2 (other parameters)."""
    root = tmp_path_factory.mktemp("compare-synth")
    rng = np.random.default_rng(3)

    def make(name, conds, n_each, start):
        ds = Dataset.create(root / name, CLASSES)
        labels = [CLASSES[i % 2] for i in range(n_each)]
        for k, cond in enumerate(conds):
            x = synthetic(rng, labels, [cond] * n_each, embedder.dim, shifts={"tunnel": 1.0})
            items = [Item(y, cond, f"{name}{cond}{i // 2}", NOW, x[i]) for i, y in enumerate(labels)]
            paths = write_pngs(root / "img", n_each, rng, start=start + k * n_each)
            add_items(ds, items, paths, embedder=embedder)
        return ds

    train = make("train", ["clean", "tunnel"], 60, 0)
    test = make("test", ["clean", "tunnel"], 45, 1000)
    new = make("new", ["tunnel", "clean"], 15, 2000)
    base = novelty.NoveltyDetector(embedder=embedder, head=False, alpha=0.1, calibration_fraction=1 / 3)
    dirs = {}
    for name, (det0, kw) in {
        "champion": (base, {"version": 1}),
        "seed1": (None, {"version": 1, "seed": 1}),
        "alpha": (
            novelty.NoveltyDetector(embedder=embedder, head=False, alpha=0.2, calibration_fraction=1 / 3),
            {},
        ),
    }.items():
        champ = det0 if det0 is not None else root / "champion"
        det, rec = retrain(champ, train, embedder=embedder, **kw)
        save_retrained(det, rec, root / name)
        dirs[name] = root / name
    return SimpleNamespace(root=root, train=train, test=test, new=new, **dirs)


def test_compare_on_datasets(synth, embedder):
    c = compare(
        synth.champion,
        synth.seed1,
        synth.test,
        new_slice=synth.new,
        new_version=2,
        n_boot=200,
        embedder=embedder,
    )
    assert c.embeddings == {"shared": True, "backbones": ["tf_efficientnet_lite0"]}
    assert c.test["identity"] == synth.test.identity(2) and c.test["n"] == 90 and c.test["version"] == 2
    assert c.new_slice["n"] == 15 and c.new_slice["only_that_version"] and c.new_slice["version"] == 2
    assert [r.name for r in c.rows] == ["all", "test slice", "new slice", "clean", "tunnel"]
    assert c.row("new slice").n == 15 and c.row("all").n == 105
    assert not c.has_head and "accuracy" not in c.row("all").metrics
    by = {ch.name: ch for ch in c.checks}
    assert by["same parameters"].passed is None and "ceteris paribus" in by["same parameters"].message
    assert by["no leakage"].passed is True
    assert c.champion["config_hash"] == c.challenger["config_hash"]
    assert c.champion["artifact_id"] == read_artifact(synth.champion / "detector").artifact_id
    # the test set must be held out: comparing on the training data itself is caught
    leak = compare(synth.champion, synth.seed1, synth.train, n_boot=200, embedder=embedder)
    bad = [ch for ch in leak.checks if ch.passed is False]
    assert "no leakage" in [ch.name for ch in bad] and not leak.passed
    assert any("60 test images are in the champion's training data" in line for line in leak.reasons)
    # other parameters: refused, unless allowed
    with pytest.raises(ComparisonError, match=r"alpha: 0\.1 → 0\.2"):
        compare(synth.champion, synth.alpha, synth.test, n_boot=200, embedder=embedder)
    other = compare(
        synth.champion, synth.alpha, synth.test, n_boot=200, allow_config_change=True, embedder=embedder
    )
    assert "parameters differ (allowed)" in other.reasons[0]
    assert (
        other.row("clean").metrics["false_alarm_rate"].challenger
        >= other.row("clean").metrics["false_alarm_rate"].champion
    )  # alpha 0.2 flags more
    # a new slice that adds nothing new
    with pytest.raises(ComparisonError, match="adds no image"):
        compare(synth.champion, synth.seed1, synth.test, new_slice=synth.test, n_boot=200, embedder=embedder)


def test_cli_compare_exit_codes(synth, tmp_path, capsys):
    out, html = tmp_path / "c.json", tmp_path / "c.html"
    args = [
        "compare",
        str(synth.champion),
        str(synth.seed1),
        "--test",
        f"{synth.test.path}:2",
        "--n-boot",
        "200",
    ]
    code = main([*args, "--out", str(out), "--report", str(html)])
    cap = capsys.readouterr()
    assert code == 3, cap.err  # the gate did not pass: keep the champion
    assert "verdict: KEEP the champion" in cap.out and "FAIL gain" in cap.out and "bootstrap" in cap.err
    data = json.loads(out.read_text())
    assert (
        data["passed"] is False
        and data["test"]["version"] == 2
        and html.read_text().startswith("<!DOCTYPE html>")
    )
    assert main([*args, "--n-boot", "10"]) == 2
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert main([*args, "--min-gain", "7"]) == 2
    assert "--min-gain" in capsys.readouterr().err
    code = main(
        ["compare", str(synth.champion), str(synth.alpha), "--test", str(synth.test.path), "--n-boot", "200"]
    )
    err = capsys.readouterr().err
    assert (
        code == 1
        and "novelty compare: error: the challenger was not trained with the champion's parameters" in err
    )
    assert main(["compare", str(synth.champion), str(synth.seed1), "--test", str(tmp_path / "none")]) == 1


# --- real frames: the windshield scenario -----------------------------------------------------------
SIZE = (160, 120)
N_FRAMES = 400  # blocks of 10 frames: 30 blocks to fit (a third held out to calibrate), 10 test blocks
LABELS = np.array(CLASSES)  # scenario label 0 = dry, 1 = wet


@pytest.fixture(scope="module")
def wind(tmp_path_factory, embedder):
    """The champion: kNN + the dry/wet head trained on clean frames (dataset version 1). The training
    dataset's version 2 adds the same frames in a tunnel, labelled; the frozen test set holds the test
    blocks clean and in a tunnel. Embeddings are made once per machine (cached by content hash)."""
    from novelty.datasets import windshield as W
    from novelty.datasets.cache import cache_root

    sc = W.windshield_scenario(seed=0, block=10, size=SIZE, n_frames=N_FRAMES)
    frames = W.street_frames(SIZE)
    root = tmp_path_factory.mktemp("compare-windshield")

    def pngs(images, folder):
        folder.mkdir(parents=True)
        out = []
        for i, img in enumerate(images):
            out.append(folder / f"{i:04d}.png")
            Image.fromarray(img).save(out[-1])
        return out

    fit_images = np.concatenate([sc.train.images, sc.calibration.images])
    fit_y = np.concatenate([sc.train.labels, sc.calibration.labels])
    fit_g = np.concatenate([sc.train.groups, sc.calibration.groups])
    fit_f = np.concatenate([sc.train.frames, sc.calibration.frames])
    tunnel_fit = np.empty_like(fit_images)
    for label, condition in ((0, "tunnel"), (1, "tunnel+wet")):
        sel = fit_y == label
        tunnel_fit[sel] = W.apply_condition(frames[fit_f[sel]], condition, 3, 0, frame_ids=fit_f[sel])
    train = Dataset.create(root / "train", CLASSES)
    add_items(
        train,
        [Item(LABELS[y], "clean", f"b{g}", NOW) for y, g in zip(fit_y, fit_g, strict=True)],
        pngs(fit_images, root / "img" / "fit"),
    )
    add_items(
        train,
        [Item(LABELS[y], "tunnel", f"tb{g}", NOW) for y, g in zip(fit_y, fit_g, strict=True)],
        pngs(tunnel_fit, root / "img" / "fit-tunnel"),
    )
    test = Dataset.create(root / "test", CLASSES)
    t = sc.test
    items = [Item(LABELS[y], "clean", f"b{g}", NOW) for y, g in zip(t.labels, t.groups, strict=True)]
    items += [Item(LABELS[y], "tunnel", f"b{g}", NOW) for y, g in zip(t.labels, t.groups, strict=True)]
    add_items(
        test,
        items,
        pngs(t.images, root / "img" / "test")
        + pngs(sc.production["tunnel"].images, root / "img" / "test-tunnel"),
    )
    cache = cache_root("test-embeddings") / "flywheel-windshield"
    embed_entries(train.entries() + test.entries(), embedder, cache)  # the backbone pass, once per machine
    for ds in (train, test):
        ds.embeddings_dir.mkdir(exist_ok=True)
        for f in cache.glob("*.npz"):
            shutil.copy(f, ds.embeddings_dir / f.name)
    template = novelty.NoveltyDetector(
        embedder=embedder, scorers=("knn",), calibration_fraction=1 / 3, seed=0
    )
    det, rec = retrain(template, train, version=1)
    save_retrained(det, rec, root / "champion")
    return SimpleNamespace(root=root, train=train, test=test, champion=root / "champion")


def _numbers(c: Comparison) -> str:
    lines = []
    for r in c.rows:
        parts = [
            f"{m} {d.champion:.3f}→{d.challenger:.3f} {d.diff:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]"
            for m, d in r.metrics.items()
        ]
        mc = (
            ""
            if r.mcnemar is None
            else f"; McNemar b={r.mcnemar['b']} c={r.mcnemar['c']} p={r.mcnemar['p_value']:.3g}"
        )
        lines.append(f"{r.name} (n={r.n}, clusters={r.n_units}): " + "; ".join(parts) + mc)
    return "\n".join(lines + c.reasons)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:calibration holds only")
def test_ceteris_paribus_no_new_labels_is_not_promoted(wind, embedder, capsys):
    """Retraining the champion on the same data with another seed: every interval contains 0 and the gate
    does not promote — the comparison is not fooled by the noise of a refit."""
    det, rec = retrain(wind.champion, wind.train, version=1, seed=1, embedder=embedder)
    save_retrained(det, rec, wind.root / "same-data")
    champion_rec = TrainingRecord.load(wind.champion / "record.json")
    assert (
        rec.config_hash == champion_rec.config_hash and rec.params != champion_rec.params
    )  # only seeds differ
    assert rec.dataset.identity == champion_rec.dataset.identity
    c = compare(wind.champion, wind.root / "same-data", wind.test, embedder=embedder, n_boot=1000, seed=0)
    with capsys.disabled():
        print("\nceteris paribus (same data, seed 0 vs 1):\n" + _numbers(c))
    assert not c.passed
    for r in c.rows:
        for name, d in r.metrics.items():
            # every interval contains 0, or is a systematic shift too small to print at three decimals: on
            # clean frames both heads are ~100 % confident and the refit moves that by about 1e-4 on every
            # image alike (the ECE interval then has no spread to reach 0 with)
            if not math.isfinite(d.diff):  # e.g. errors among trusted where only one model trusts any
                continue
            assert d.ci_low <= 0.0 <= d.ci_high or max(abs(d.ci_low), abs(d.ci_high)) < 5e-4, (
                r.name,
                name,
                d,
            )
    for r in c.rows:  # the gated metric and the novelty metrics: intervals that contain 0
        for name in ("accuracy", "auroc", "false_alarm_rate"):
            if name in r.metrics:
                assert r.metrics[name].ci_low <= 0.0 <= r.metrics[name].ci_high, (r.name, name)
    assert {ch.name for ch in c.checks if ch.passed is False} & {"gain", "significant"}
    assert c.embeddings["shared"] and next(ch for ch in c.checks if ch.name == "no leakage").passed is True


@pytest.fixture(scope="module")
def tunnel_run(wind, tmp_path_factory):
    """The challenger retrained on version 2 (the tunnel frames labelled), compared through the CLI."""
    out = tmp_path_factory.mktemp("tunnel-run")
    assert (
        main(["retrain", str(wind.champion), "--dataset", str(wind.train.path), "--out", str(out / "v2")])
        == 0
    )
    code = main(
        [
            "compare",
            str(wind.champion),
            str(out / "v2"),
            "--test",
            str(wind.test.path),
            "--out",
            str(out / "comparison.json"),
            "--report",
            str(out / "comparison.html"),
        ]
    )
    return SimpleNamespace(out=out, code=code, data=json.loads((out / "comparison.json").read_text()))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:calibration holds only")
def test_challenger_that_learnt_tunnels_is_promoted(wind, tunnel_run, capsys):
    d = tunnel_run.data
    with capsys.disabled():
        print("\ntunnel challenger:\n" + "\n".join(d["reasons"]))
    assert tunnel_run.code == 0 and d["passed"] is True
    rows = {r["name"]: r for r in d["rows"]}
    tunnel = rows["tunnel"]["metrics"]["accuracy"]
    assert tunnel["diff"] > 0.1 and tunnel["ci"][0] > 0
    assert rows["clean"]["metrics"]["accuracy"]["diff"] >= -0.02
    assert d["champion"]["config_hash"] == d["challenger"]["config_hash"]
    rec = TrainingRecord.load(tunnel_run.out / "v2" / "record.json")
    assert rec.dataset.version == 2 and rec.dataset.n == 600 and rec.parent == d["champion"]["artifact_id"]
    assert config_hash(rec.params) == config_hash(
        detector_params(novelty.load(tunnel_run.out / "v2" / "detector"))
    )


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, errors="replace")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:calibration holds only")
def test_comparison_report_renders_in_headless_chromium(tunnel_run, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (as root) to install Debian's chromium")
    html = tunnel_run.out / "comparison.html"
    png = tmp_path / "shot.png"
    shot = _chromium([f"--screenshot={png}", "--window-size=1280,1100", html.as_uri()], tmp_path / "p1")
    assert shot.returncode == 0, shot.stderr[-3000:]
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape == (1100, 1280, 3) and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 200
    green = (np.abs(rgb.astype(int) - [46, 125, 50]).sum(axis=2) < 60).sum()
    assert green > 200, "no green interval bar or verdict was drawn"
    dom = _chromium(["--dump-dom", html.as_uri()], tmp_path / "p2")
    assert dom.returncode == 0 and "PROMOTE the challenger" in dom.stdout
    assert not [ln for ln in dom.stderr.splitlines() if "Uncaught" in ln]


def test_compare_warns_when_the_test_set_lacks_a_condition_of_the_new_slice(synth, embedder, tmp_path):
    """Production (the new slice) has snow, the frozen test set has none: the gate's per-condition checks cannot
    see a snow regression on frozen data, and the user is told so."""
    import warnings

    rng = np.random.default_rng(9)
    ds = Dataset.create(tmp_path / "snow", CLASSES)
    labels = [CLASSES[i % 2] for i in range(10)]
    x = synthetic(rng, labels, ["snow"] * 10, embedder.dim, shifts={"snow": 1.0})
    items = [Item(y, "snow", f"snow{i // 2}", NOW, x[i]) for i, y in enumerate(labels)]
    add_items(ds, items, write_pngs(tmp_path / "img", 10, rng, start=5000), embedder=embedder)
    with pytest.warns(UserWarning, match="holds no image of snow, which the new slice"):
        compare(synth.champion, synth.seed1, synth.test, new_slice=ds, n_boot=100, embedder=embedder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compare(synth.champion, synth.seed1, synth.test, new_slice=synth.new, n_boot=100, embedder=embedder)
    assert not [w for w in caught if "holds no image of" in str(w.message)]


def test_leakage_is_checked_from_the_artifacts_image_hashes_without_a_record(synth, embedder, tmp_path):
    """A detector saved alone (no training record beside it, as `novelty fit DATA` writes) is still checked:
    its artifact keeps the sha256 of its training images; one fitted from bare embeddings is not checked."""
    alone = novelty.load(synth.champion / "detector", embedder=embedder)
    alone.save(tmp_path / "alone")
    leak = compare(tmp_path / "alone", synth.seed1, synth.train, n_boot=200, embedder=embedder)
    check = next(ch for ch in leak.checks if ch.name == "no leakage")
    assert check.passed is False and "60 test images are in the champion's training data" in check.message
    ok = compare(tmp_path / "alone", synth.seed1, synth.test, n_boot=200, embedder=embedder)
    assert next(ch for ch in ok.checks if ch.name == "no leakage").passed is True
    from novelty.flywheel.comparison.compare import _leakage

    bare = SimpleNamespace(trained_sha256_=None)
    unknown = _leakage(synth.train.entries(), [("champion", None)], [bare])
    assert unknown.passed is None and "no image hashes in its artifact" in unknown.message
