"""The MLflow registry backend against a real MLflow tracking store (SQLite, artifacts in a folder; no server):
versions with tags, champion/challenger aliases, the same promote gate and rollback as the local registry,
the detector as a pyfunc model loaded back through ``models:/NAME@champion`` and scoring real images."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import pytest

import novelty
from novelty.cli import main

mlflow = pytest.importorskip("mlflow")

from comparison_support import artifact_id, write_comparison  # noqa: E402  # tests/comparison_support.py

from novelty.flywheel.registry.mlflow_backend import MlflowRegistry  # noqa: E402
from novelty.flywheel.registry.store import (  # noqa: E402
    PromotionRefusedError,
    RegistryNotFoundError,
    RollbackError,
    UnknownVersionError,
)

pytestmark = [
    pytest.mark.slow,  # an MLflow store creates its tables and logs models: seconds per test
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),  # MLflow's SQL store
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str]:
    """A tracking store: SQLite database and an artifact folder (one per module: creating the tables takes
    seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts")


@pytest.fixture(scope="module")
def detectors(tmp_path_factory, embedder, textile_embeddings) -> list[Path]:
    x = textile_embeddings["nominal"]
    out = tmp_path_factory.mktemp("detectors")
    return [
        novelty.NoveltyDetector(embedder=embedder, calibration_fraction=0.3, seed=i)
        .fit_embeddings(x[lo : lo + 150])
        .save(out / f"det{i}")
        for i, lo in enumerate((0, 60, 120))
    ]


@pytest.fixture
def reg(store) -> MlflowRegistry:
    uri, artifacts = store
    return MlflowRegistry(uri, f"windshield-{secrets.token_hex(3)}", artifact_location=artifacts)


def comparison(path: Path, champion: Path, challenger: Path, *, passed: bool = True, reg=None) -> Path:
    """A real comparison file (the gate run on seeded p-values), recorded in ``reg`` when given."""
    return write_comparison(path, champion, challenger, passed=passed, registry=reg)


def test_register_promote_rollback(reg, detectors, embedder, tmp_path):
    with pytest.raises(RegistryNotFoundError, match="no model"):
        reg.list_versions()
    record = {"config_hash": "ab" * 32, "artifact_id": artifact_id(detectors[0])}
    v1 = reg.register(detectors[0], record=record, note="first", embedder=embedder)
    v2 = reg.register(detectors[1], alias="challenger", embedder=embedder)
    assert (v1, v2) == ("1", "2")
    assert reg.register(detectors[1], embedder=embedder) == "2"  # the same detector: no new version
    versions = reg.list_versions()
    assert [v.version for v in versions] == ["1", "2"]
    assert versions[0].artifact_id == artifact_id(detectors[0]) and versions[0].note == "first"
    assert versions[0].info["config_hash"] == "ab" * 32 and versions[1].aliases == ("challenger",)
    mv = reg.client.get_model_version(reg.model_name, "1")
    assert mv.tags["artifact_id"] == artifact_id(detectors[0]) and mv.tags["config_hash"] == "ab" * 32

    assert reg.promote(1).changed and reg.alias("champion") == "1"
    with pytest.raises(PromotionRefusedError, match="needs a comparison"):
        reg.promote("challenger")
    failing = comparison(tmp_path / "f.json", detectors[0], detectors[1], passed=False, reg=reg)
    with pytest.raises(PromotionRefusedError, match="did not pass"):
        reg.promote(2, comparison=failing)
    flipped = tmp_path / "flipped.json"
    flipped.write_text(failing.read_text().replace('"passed": false', '"passed": true', 1))
    with pytest.raises(PromotionRefusedError, match="does not hold up"):
        reg.promote(2, comparison=flipped)
    with pytest.raises(PromotionRefusedError, match="not for version 2"):
        reg.promote(2, comparison=comparison(tmp_path / "o.json", detectors[0], detectors[2], reg=reg))
    with pytest.raises(PromotionRefusedError, match="not recorded by this registry"):
        reg.promote(2, comparison=comparison(tmp_path / "unrecorded.json", detectors[0], detectors[1]))
    change = reg.promote(2, comparison=comparison(tmp_path / "ok.json", detectors[0], detectors[1], reg=reg))
    assert change.changed and change.previous == "1" and reg.alias("champion") == "2"
    v3 = reg.register(detectors[2], embedder=embedder)
    assert reg.promote(v3, force=True, reason="test").forced
    assert reg.champions() == ["1", "2", "3"]
    assert reg.rollback().version == "2" and reg.rollback().version == "1"
    with pytest.raises(RollbackError, match="no earlier champion"):
        reg.rollback()
    assert reg.aliases() == {"challenger": "2", "champion": "1"}
    events = [(e.event, e.alias, e.version) for e in reg.history()]
    assert events[0] == ("register", None, "1")
    assert [e for e in events if e[1] == "champion"] == [
        ("promote", "champion", "1"),
        ("promote", "champion", "2"),
        ("promote", "champion", "3"),
        ("rollback", "champion", "2"),
        ("rollback", "champion", "1"),
    ]
    assert reg.history()[-3].data["forced"] is True and reg.history()[-3].data["reason"] == "test"
    with pytest.raises(UnknownVersionError, match="no version 9"):
        reg.promote(9, force=True, reason="test")


def test_pyfunc_model_scores_real_images_like_the_library(reg, detectors, embedder, textile_paths, store):
    reg.register(detectors[0], embedder=embedder)
    reg.register(detectors[1], embedder=embedder)
    reg.promote(1)
    reg.promote(2, force=True, reason="test")
    images = [textile_paths["nominal"][400], textile_paths["global"][300], textile_paths["local"][300]]
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(store[0])
    mlflow.set_registry_uri(store[0])
    try:
        model = mlflow.pyfunc.load_model(f"models:/{reg.model_name}@champion")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    import pandas as pd

    by_path = model.predict(pd.DataFrame({"image": images}))
    by_bytes = model.predict(pd.DataFrame({"image": [Path(p).read_bytes() for p in images]}))
    ref = novelty.load(detectors[1], embedder=embedder).score_batch(images, progress=False)
    np.testing.assert_allclose(by_path["p_value"].to_numpy(), ref.p_value, atol=1e-9)
    np.testing.assert_allclose(by_bytes["p_value"].to_numpy(), ref.p_value, atol=1e-9)
    assert list(by_path["is_novel"]) == list(ref.is_novel)
    np.testing.assert_allclose(by_path["novelty"].to_numpy(), 1 - by_path["p_value"].to_numpy())
    assert by_path["error"].isna().all()
    bad = model.predict(pd.DataFrame({"image": [b"not an image"]}))
    assert bad["error"][0] and "not_an_image" in bad["error"][0]


def test_download_returns_the_verified_detector(reg, detectors, embedder, tmp_path):
    reg.register(detectors[2], embedder=embedder)
    reg.promote(1)
    path = reg.download("champion", tmp_path / "dl")
    assert artifact_id(path) == artifact_id(detectors[2])
    assert novelty.load(path, embedder=embedder).artifact_id_ == artifact_id(detectors[2])


def test_cli_with_mlflow(store, detectors, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where MLflow puts artifacts of a new experiment by default
    uri = store[0]
    name = f"cli-{secrets.token_hex(3)}"
    opts = ["--mlflow", uri, "--model", name]
    assert main(["registry", *opts]) == 1
    assert "no model" in capsys.readouterr().err
    assert main(["registry", "--mlflow", "bogus://x", "--model", name]) == 1
    assert "cannot use the MLflow registry at bogus://x" in capsys.readouterr().err
    assert main(["register", str(detectors[0]), "--no-load", *opts]) == 0
    assert "version 1" in capsys.readouterr().out
    assert main(["register", str(detectors[1]), "--alias", "challenger", "--no-load", *opts]) == 0
    assert main(["promote", "1", *opts]) == 0
    assert main(["promote", "challenger", *opts]) == 1
    assert "needs a comparison" in capsys.readouterr().err
    comp = comparison(tmp_path / "c.json", detectors[0], detectors[1])
    assert main(["promote", "challenger", "--comparison", str(comp), *opts]) == 1
    assert "not recorded by this registry" in capsys.readouterr().err
    MlflowRegistry(uri, name).record_comparison(comp)
    assert main(["promote", "challenger", "--comparison", str(comp), *opts]) == 0
    assert "champion: version 2 (was 1)" in capsys.readouterr().out
    assert main(["rollback", *opts]) == 0
    assert "champion: version 1 (rolled back from 2)" in capsys.readouterr().out
    assert main(["registry", *opts]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:3] == ["1", artifact_id(detectors[0])[:12], "champion"]
    assert rows[2].split()[:3] == ["2", artifact_id(detectors[1])[:12], "challenger"]
    assert main(["registry", "--history", *opts]) == 0
    assert "rollback" in capsys.readouterr().out
