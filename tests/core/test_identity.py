"""The three identities of a detector (``novelty.identity``): which saved detector (artifact id), which fitted
state (fingerprint), which configuration (config hash, seeds left out), each asked in one place."""

from __future__ import annotations

import hashlib

import numpy as np

import novelty
from novelty import identity
from novelty.batch import engine
from novelty.flywheel import record


def _fit(x: np.ndarray, embedder, **kw) -> novelty.NoveltyDetector:
    det = novelty.NoveltyDetector(embedder=embedder, alpha=0.1, n_neighbors=3, **kw)
    return det.fit_embeddings(x, ids=[f"nominal/{i}.png" for i in range(len(x))])


def test_fitted_fingerprint_names_the_fitted_state_and_the_artifact_id_the_saved_one(
    embedder, textile_embeddings, tmp_path
):
    x = textile_embeddings["nominal"][:120]
    a, b = _fit(x, embedder, seed=0), _fit(x, embedder, seed=0)
    fp = identity.fitted_fingerprint(a)
    assert len(fp) == 64 and fp == identity.fitted_fingerprint(b)
    changed = x.copy()
    changed[0] = changed[1]
    assert identity.fitted_fingerprint(_fit(changed, embedder, seed=0)) != fp
    assert identity.detector_id(a) == identity.UNSAVED_PREFIX + fp

    a.save(tmp_path / "det")
    manifest = (tmp_path / "det" / "manifest.json").read_bytes()
    assert a.artifact_id_ == identity.artifact_id(manifest) == hashlib.sha256(manifest).hexdigest()
    assert identity.detector_id(a) == a.artifact_id_
    assert identity.detector_id(novelty.load(tmp_path / "det")) == a.artifact_id_


def test_config_hash_leaves_out_the_seeds_and_names_what_differs(embedder, textile_embeddings):
    x = textile_embeddings["nominal"][:120]
    p0 = identity.detector_params(_fit(x, embedder, seed=0))
    p1 = identity.detector_params(_fit(x, embedder, seed=7))
    assert p0 != p1 and identity.config_hash(p0) == identity.config_hash(p1)
    assert identity.param_diff(p0, p1) == "(none)" and "seed: 0 → 7" in identity.param_diff(
        p0, p1, seeds=True
    )
    other = {**p0, "alpha": 0.05}
    assert identity.config_hash(other) != identity.config_hash(p0)
    assert identity.param_diff(p0, other) == "alpha: 0.1 → 0.05"
    assert identity.with_seed(p0, 7)["seed"] == 7 and identity.config_hash(identity.with_seed(p0, 7)) == (
        identity.config_hash(p0)
    )


def test_the_batch_engine_and_the_training_record_ask_the_one_module():
    assert engine.detector_id is identity.detector_id
    for name in (
        "canonical_json",
        "config_hash",
        "detector_params",
        "hashed_params",
        "param_diff",
        "with_seed",
    ):
        assert getattr(record, name) is getattr(identity, name)
