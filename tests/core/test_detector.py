"""NoveltyDetector on real textile images: calibration holds, defects are found, artifacts are safe."""

from __future__ import annotations

import json

import numpy as np
import pytest

import novelty
from novelty.detector import calibration_split
from novelty.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    InvalidInputError,
    NotFittedError,
)
from novelty.metrics import auroc


def test_calibration_holds_on_held_out_nominal_images(textile_embeddings):
    """Fit on part of the nominal images; on nominal images never used for fitting or calibrating, the share
    flagged at alpha stays near alpha (averaged over 20 random splits, and for every split not far above)."""
    x = textile_embeddings["nominal"]
    shares: dict[float, list[float]] = {0.01: [], 0.05: [], 0.1: []}
    for seed in range(20):
        perm = np.random.default_rng(100 + seed).permutation(len(x))
        fit, test = perm[:700], perm[700:]
        det = novelty.NoveltyDetector(calibration_fraction=0.3, seed=seed).fit_embeddings(x[fit])
        p = det.score_embeddings(x[test]).p_value
        for a in shares:
            shares[a].append(float((p < a).mean()))
    mean = {a: float(np.mean(v)) for a, v in shares.items()}
    print("mean flagged share on held-out nominal:", mean)
    assert mean[0.01] <= 0.02
    assert mean[0.05] <= 0.07
    assert mean[0.1] <= 0.12
    assert np.median(shares[0.05]) <= 0.07


def test_global_defects_are_found(textile_embeddings):
    x = textile_embeddings["nominal"]
    det = novelty.NoveltyDetector(seed=0).fit_embeddings(x[:700])
    nominal = det.score_embeddings(x[700:])
    glob = det.score_embeddings(textile_embeddings["global"])
    assert auroc(nominal.scores["knn"], glob.scores["knn"]) >= 0.95
    assert glob.is_novel.mean() >= 0.8


@pytest.fixture(scope="module")
def fitted(textile_paths):
    return novelty.NoveltyDetector(num_workers=0).fit(textile_paths["nominal"][:120])


def test_fit_and_score_images_end_to_end(fitted, textile_paths):
    v = fitted.score(textile_paths["global"][0])
    assert isinstance(v, novelty.Verdict)
    assert 0.0 < v.p_value <= 1.0 and v.novelty == pytest.approx(1.0 - v.p_value)
    assert set(v.scores) == {"knn"} and len(v.neighbors) == 5
    assert all(n.id.endswith(".jpg") for n in v.neighbors)
    dists = [n.distance for n in v.neighbors]
    assert dists == sorted(dists)
    # a training image's own file is its nearest neighbour at distance 0
    train_file = fitted.train_ids_[3]
    v_train = fitted.score(train_file)
    assert v_train.neighbors[0].id == train_file and v_train.neighbors[0].distance < 1e-5


def test_score_batch_keeps_every_input(fitted, textile_paths, tmp_path):
    bad = tmp_path / "broken.jpg"
    data = textile_paths["global"][0].read_bytes()
    bad.write_bytes(data[: len(data) * 6 // 10])
    inputs = [textile_paths["nominal"][200], bad, textile_paths["global"][1]]
    batch = fitted.score_batch(inputs)
    assert len(batch) == 3 and batch.ok.tolist() == [True, False, True]
    assert batch.errors[1].startswith("truncated:") and batch.sources[1].endswith("broken.jpg")
    assert np.isnan(batch.p_value[1]) and not batch.is_novel[1]
    single = fitted.score(inputs[2])
    assert batch[2].p_value == pytest.approx(single.p_value)
    recs = batch.to_records()
    assert [r["error"] == "" for r in recs] == [True, False, True]
    json.dumps(recs)  # JSON-friendly


def test_save_load_gives_identical_scores(fitted, textile_paths, tmp_path):
    paths = textile_paths["local"][:6] + textile_paths["nominal"][500:504]
    before = fitted.score_batch(paths)
    out = fitted.save(tmp_path / "det")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["manifest.json", "MANIFEST.sha256", "index.faiss", "calibration.safetensors", "train_ids.json"]
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and set(manifest["files"]) == set(names) - {
        "manifest.json",
        "MANIFEST.sha256",
    }
    assert {"torch", "timm", "faiss", "numpy", "novelty"} <= set(manifest["versions"])
    assert manifest["backbone"]["fingerprint"] == fitted.embedder.fingerprint
    loaded = novelty.load(out)
    after = loaded.score_batch(paths)
    np.testing.assert_array_equal(before.scores["knn"], after.scores["knn"])
    np.testing.assert_array_equal(before.p_value, after.p_value)
    np.testing.assert_array_equal(before.neighbor_ids, after.neighbor_ids)
    assert loaded.train_ids_ == fitted.train_ids_
    # saving again over an existing artifact replaces it atomically, leaving no temporary directories
    fitted.save(out)
    assert [p.name for p in out.parent.iterdir()] == ["det"]


def test_any_flipped_byte_is_refused(fitted, tmp_path):
    out = fitted.save(tmp_path / "det")
    for f in sorted(out.iterdir()):
        data = bytearray(f.read_bytes())
        pos = len(data) // 2
        data[pos] ^= 0x01
        f.write_bytes(bytes(data))
        with pytest.raises(
            ArtifactIntegrityError, match=f.name if f.name != "MANIFEST.sha256" else "manifest"
        ):
            novelty.load(out)
        data[pos] ^= 0x01
        f.write_bytes(bytes(data))
    novelty.load(out)  # restored: loads again


def test_missing_extra_and_foreign_files_are_refused(fitted, tmp_path):
    out = fitted.save(tmp_path / "det")
    (out / "extra.bin").write_bytes(b"x")
    with pytest.raises(ArtifactIntegrityError, match="unexpected"):
        novelty.load(out)
    (out / "extra.bin").unlink()
    (out / "index.faiss").unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        novelty.load(out)
    with pytest.raises(ArtifactError, match="not a directory"):
        novelty.load(tmp_path / "nothing")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        fitted.save(foreign)
    assert (foreign / "a.txt").read_text() == "keep me"


def test_version_and_backbone_mismatch_are_refused(fitted, tmp_path):
    import hashlib

    def rewrite(path, edit):
        m = json.loads((path / "manifest.json").read_text())
        edit(m)
        data = json.dumps(m).encode()
        (path / "manifest.json").write_bytes(data)
        (path / "MANIFEST.sha256").write_text(hashlib.sha256(data).hexdigest() + "  manifest.json\n")

    out = fitted.save(tmp_path / "a")
    rewrite(out, lambda m: m.update(format_version=99))
    with pytest.raises(ArtifactVersionError, match="format version 99"):
        novelty.load(out)
    out = fitted.save(tmp_path / "b")
    rewrite(out, lambda m: m["backbone"].update(fingerprint="0" * 64))
    with pytest.raises(ArtifactVersionError, match="weights differ"):
        novelty.load(out)


def test_not_fitted_and_bad_arguments(textile_embeddings):
    det = novelty.NoveltyDetector()
    with pytest.raises(NotFittedError):
        det.score_embeddings(textile_embeddings["nominal"][:2])
    with pytest.raises(NotFittedError):
        det.save("/tmp/never")
    with pytest.raises(InvalidInputError, match="calibration_fraction"):
        novelty.NoveltyDetector(calibration_fraction=1.5).fit_embeddings(textile_embeddings["nominal"][:50])
    with pytest.raises(novelty.errors.UnknownNameError):
        novelty.NoveltyDetector(scorers=("magic",)).fit_embeddings(textile_embeddings["nominal"][:50])
    with pytest.warns(UserWarning, match="nothing can ever be flagged"):
        novelty.NoveltyDetector(calibration_fraction=0.2).fit_embeddings(textile_embeddings["nominal"][:40])


def test_group_split_keeps_groups_together():
    groups = np.repeat(np.arange(40), 25)  # e.g. video frames in blocks of 25
    fit, cal = calibration_split(1000, 0.2, groups=groups, seed=3)
    assert len(set(groups[fit]) & set(groups[cal])) == 0
    assert 150 <= len(cal) <= 250 and len(fit) + len(cal) == 1000


def test_local_knn_round_trips_through_an_artifact(textile_embeddings, tmp_path):
    x = textile_embeddings["nominal"][:300]
    det = novelty.NoveltyDetector(scorers=("knn", "knn-local")).fit_embeddings(x)
    q = np.vstack([textile_embeddings["global"][:5], textile_embeddings["nominal"][600:605]])
    before = det.score_embeddings(q)
    out = det.save(tmp_path / "det")
    assert (out / "scorer_knn-local.safetensors").is_file()
    after = novelty.load(out).score_embeddings(q)
    np.testing.assert_array_equal(before.scores["knn-local"], after.scores["knn-local"])
    np.testing.assert_array_equal(before.p_value, after.p_value)
    assert (before.scores["knn-local"][:5] > np.median(before.scores["knn-local"][5:])).all()


# --- a failed fit changes nothing; the caller's parts stay unfitted -----------------------------------
def test_a_failed_fit_leaves_the_detector_unfitted(textile_embeddings):
    x = textile_embeddings["nominal"][:120]
    det = novelty.NoveltyDetector()
    with pytest.raises(InvalidInputError, match="two classes"):
        det.fit_embeddings(x, labels=["dry"] * len(x))
    assert not det.is_fitted and not hasattr(det, "calibrator_")
    with pytest.raises(NotFittedError):
        det.score_embeddings(x[:3])


def test_a_failed_refit_keeps_the_previous_state_consistent(textile_embeddings):
    x = textile_embeddings["nominal"]
    det = novelty.NoveltyDetector().fit_embeddings(x[:300])
    q = textile_embeddings["global"][:20]
    before = det.score_embeddings(q)
    n_index, n_cal = det.index_.ntotal, det.calibrator_.n
    with pytest.raises(InvalidInputError, match="two classes"):
        det.fit_embeddings(x[300:800], labels=["dry"] * 500)  # fails in the head, after the calibration
    assert (det.index_.ntotal, det.calibrator_.n) == (n_index, n_cal)
    after = det.score_embeddings(q)
    np.testing.assert_array_equal(before.p_value, after.p_value)
    np.testing.assert_array_equal(before.neighbor_ids, after.neighbor_ids)


def test_scorer_and_head_instances_are_cloned_not_fitted(textile_embeddings):
    x = textile_embeddings["nominal"][:200]
    labels = np.where(np.arange(200) % 2 == 0, "a", "b")
    knn = novelty.KNNScorer(k=3)
    head = novelty.ConditionHead(max_epochs=2)
    det = novelty.NoveltyDetector(scorers=(knn,), head=head).fit_embeddings(x, labels)
    assert not knn.is_fitted and not hasattr(knn, "index_")
    assert not head.is_fitted
    assert det.scorers_[0] is not knn and det.scorers_[0].k == 3 and det.scorers_[0].is_fitted
    assert det.head_ is not head and det.head_.max_epochs == 2


# --- arguments are checked where they are written --------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": "0.05"}, "alpha must be a number, got the string '0.05'"),
        ({"alpha": 1.5}, r"alpha must lie in \(0, 1\)"),
        ({"n_neighbors": -3}, "n_neighbors must be an integer ≥ 0, got -3"),
        ({"n_neighbors": 2.5}, "n_neighbors must be an integer"),
        ({"calibration_fraction": 0.0}, r"calibration_fraction must lie in \(0, 1\)"),
        ({"calibration_fraction": "0.2"}, "calibration_fraction must be a number"),
        ({"batch_size": 0}, "batch_size must be an integer ≥ 1"),
        ({"num_workers": -1}, "num_workers must be an integer ≥ 0"),
        ({"seed": -1}, "seed must be an integer ≥ 0"),
        ({"device": "bogus"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got 'bogus'"),
        ({"draft": "yes"}, "draft must be True or False"),
        (
            {"scorers": {"knn": {"kk": 3}}},
            r"unknown parameter\(s\) kk for scorer 'knn'; valid parameters: k, ",
        ),
        ({"scorers": ("knn", "knn")}, "each scorer may appear once"),
        ({"scorers": ()}, "at least one scorer"),
        ({"scorers": 42}, "scorers must be names"),
        ({"head": {"hiden": 8}}, r"unknown parameter\(s\) hiden for head"),
        ({"head": "yes"}, "head must be None, False"),
        ({"index": 42}, "index must be None, a FAISS factory string or an EmbeddingIndex"),
        ({"index": novelty.EmbeddingIndex(metric="euclidean")}, "give them the same metric"),
        ({"backbone": ""}, "backbone must be a timm model name"),
    ],
)
def test_bad_arguments_fail_in_the_constructor(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        novelty.NoveltyDetector(**kwargs)


def test_labels_with_missing_values_are_refused(textile_embeddings):
    x = textile_embeddings["nominal"][:60]
    labels: list = ["a", "b"] * 30
    labels[7] = None
    with pytest.raises(InvalidInputError, match=r"missing value.*position 7"):
        novelty.NoveltyDetector().fit_embeddings(x, labels)
    with pytest.raises(InvalidInputError, match=r"must all be strings or all numbers"):
        novelty.NoveltyDetector().fit_embeddings(x, ["a", 1] * 30)


def test_the_stated_minimum_number_of_images_is_the_real_one(textile_embeddings):
    x = textile_embeddings["nominal"]
    det = novelty.NoveltyDetector()  # kNN k=5 needs 6 to fit; 20 % held out, at least 2 to calibrate
    assert det.min_training_images() == 8
    with pytest.raises(InvalidInputError, match=r"need at least 8 training images, got 7.*k=5"):
        det.fit_embeddings(x[:7])
    with pytest.warns(UserWarning, match="nothing can ever be flagged"):
        det.fit_embeddings(x[:8])  # exactly the minimum fits
    ae = novelty.NoveltyDetector(scorers=("knn", "autoencoder"), calibration_fraction=0.5)
    assert ae.min_training_images() == 20  # the autoencoder needs 10 to fit, half is held out
    with pytest.raises(InvalidInputError, match=r"at least 20 training images, got 19.*AutoencoderScorer"):
        ae.fit_embeddings(x[:19])
    k1 = novelty.NoveltyDetector(scorers={"knn": {"k": 1}}, calibration_fraction=0.5)
    assert k1.min_training_images() == 4 and k1.min_training_images(labelled=True) == 4


# --- a shared embedder and the kind of index ---------------------------------------------------------
def test_a_shared_embedder_and_an_index_kind_round_trip(embedder, textile_embeddings, tmp_path):
    x = textile_embeddings["nominal"][:300]
    q = np.vstack([textile_embeddings["global"][:5], textile_embeddings["nominal"][600:605]])
    exact = novelty.NoveltyDetector(embedder=embedder)
    proto = novelty.EmbeddingIndex(factory="HNSW32")
    approx = novelty.NoveltyDetector(embedder=embedder, scorers=("knn", "knn-local"), index=proto)
    for det in (exact, approx):
        det.fit_embeddings(x)
        assert det.embedder is embedder
    assert approx.index_.factory == "HNSW32" and proto.ntotal == 0  # the prototype stays empty
    out = approx.save(tmp_path / "approx")
    m = json.loads((out / "manifest.json").read_text())
    assert m["index"]["factory"] == "HNSW32" and m["backbone"]["fingerprint"] == embedder.fingerprint
    loaded = novelty.load(out, embedder=embedder)
    assert loaded.embedder is embedder and loaded.index_.factory == "HNSW32"
    before, after = approx.score_embeddings(q), loaded.score_embeddings(q)
    np.testing.assert_array_equal(before.p_value, after.p_value)
    np.testing.assert_array_equal(before.neighbor_ids, after.neighbor_ids)
    assert isinstance(loaded.index, novelty.EmbeddingIndex) and loaded.index.factory == "HNSW32"
    with pytest.raises(InvalidInputError, match="contradicts the embedder"):
        novelty.NoveltyDetector(embedder=embedder, backbone="resnet18")
    euclid = novelty.NoveltyDetector(
        embedder=embedder, scorers={"knn": {"metric": "euclidean"}}, index=novelty.EmbeddingIndex("euclidean")
    ).fit_embeddings(x)
    assert euclid.index_.metric == "euclidean"


def test_joining_verdicts_names_every_field():
    """BatchVerdicts.concat joins each field by its kind: a field it does not name would be lost."""
    import dataclasses

    from novelty import verdicts

    groups = (verdicts._ROW_ARRAYS, verdicts._ROW_LISTS, verdicts._ROW_DICTS, verdicts._SHARED)
    named = [n for g in groups for n in g]
    assert sorted(named) == sorted(f.name for f in dataclasses.fields(verdicts.BatchVerdicts))
    with pytest.raises(InvalidInputError, match="no verdicts"):
        verdicts.BatchVerdicts.concat([])
