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
