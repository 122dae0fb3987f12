"""Embeddings made of the pooled output and inner stages (``layers="final+s16"``): what they contain, how they are
recorded and fingerprinted, and that a detector fitted on them saves, loads and refuses an embedder of other
layers. The default layers stay exactly what they were."""

from __future__ import annotations

import json

import numpy as np
import pytest

import novelty
from novelty.embedding_layers import DEFAULT_LAYERS, check_embedding_layers, layers_fingerprint
from novelty.errors import ArtifactVersionError, InvalidInputError
from novelty.flywheel.record import build_detector, config_hash, detector_params, params_from_artifact


@pytest.fixture(scope="module")
def layered() -> novelty.Embedder:
    return novelty.Embedder(num_workers=0, layers="final+s16")


def test_layer_names_are_checked():
    assert check_embedding_layers("final") == DEFAULT_LAYERS
    assert check_embedding_layers("final+s16") == ("final", "s16")
    assert check_embedding_layers(["final", "s8"]) == ("final", "s8")
    for bad in ("", "final+", "final+s0", "final+x16", ["final", "final"], 16, None, []):
        with pytest.raises(InvalidInputError):
            check_embedding_layers(bad)


def test_final_plus_stage_is_both_parts_normalised_with_equal_weight(embedder, layered, textile_paths):
    paths = textile_paths["nominal"][:6]
    base = embedder.embed(paths)
    x = layered.embed(paths)
    assert layered.dim == 1280 + 112 and x.shape == (6, 1392) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # the final part is the default embedding scaled by 1/sqrt(2); the stage part is a unit vector as well
    np.testing.assert_allclose(x[:, :1280] * np.sqrt(2.0), base, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(x[:, 1280:], axis=1), 1 / np.sqrt(2.0), atol=1e-5)
    # the stage part is the spatial mean of the stride-16 stage, computed independently here
    import torch

    model = embedder.model
    imgs = [embedder.preprocess(novelty.images.load_image(p, min_size=embedder.min_size)) for p in paths]
    with torch.inference_mode():
        maps = model.forward_intermediates(
            embedder.preprocess.batch(imgs), indices=[3], intermediates_only=True
        )
    stage = maps[0].float().mean(dim=(2, 3)).numpy()
    assert maps[0].shape[1] == 112 and embedder.model.feature_info[3]["reduction"] == 16
    stage /= np.linalg.norm(stage, axis=1, keepdims=True)
    np.testing.assert_allclose(x[:, 1280:] * np.sqrt(2.0), stage, atol=1e-4)


def test_layers_are_part_of_the_fingerprint_and_the_default_keeps_its_own(embedder, layered):
    assert embedder.fingerprint == embedder.weights_fingerprint == layered.weights_fingerprint
    assert layered.fingerprint == layers_fingerprint(embedder.fingerprint, ("final", "s16"))
    assert layered.fingerprint != embedder.fingerprint
    assert embedder.config()["layers"] == ["final"] and layered.config()["layers"] == ["final", "s16"]
    assert "layers='final+s16'" in repr(layered) and "layers" not in repr(embedder)


def test_unsupported_layer_choices_are_refused_clearly():
    with pytest.raises(InvalidInputError, match="no stage of stride 64"):
        novelty.Embedder(num_workers=0, layers="final+s64")
    with pytest.raises(InvalidInputError, match="runtime='torch' only"):
        novelty.Embedder(num_workers=0, layers="final+s16", runtime="openvino")


def test_a_detector_on_layered_embeddings_saves_loads_and_refuses_other_layers(
    embedder, layered, textile_paths, tmp_path
):
    train = textile_paths["nominal"][:70]
    det = novelty.NoveltyDetector(embedder=layered, calibration_fraction=0.3, seed=0)
    assert det.layers == ("final", "s16")
    det.fit(train)
    out = det.save(tmp_path / "det")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backbone"]["layers"] == ["final", "s16"] and manifest["index"]["dim"] == 1392
    probe = textile_paths["global"][:4]
    again = novelty.NoveltyDetector.load(out, embedder=layered)
    np.testing.assert_allclose(again.score_batch(probe).score, det.score_batch(probe).score, atol=1e-6)
    # loaded without an embedder, the detector builds one with the recorded layers
    own = novelty.NoveltyDetector.load(out)
    assert own.embedder.layers == ("final", "s16") and own.embedder.fingerprint == layered.fingerprint
    np.testing.assert_allclose(own.score_batch(probe).score, det.score_batch(probe).score, atol=1e-5)
    with pytest.raises(ArtifactVersionError, match="layers 'final\\+s16'"):
        novelty.NoveltyDetector.load(out, embedder=embedder)
    # the training record carries the layers, and a detector rebuilt from it makes the same embeddings
    params = detector_params(det)
    assert params["layers"] == ["final", "s16"]
    assert params_from_artifact(out)[0] == params
    rebuilt = build_detector(params)
    assert rebuilt.layers == ("final", "s16")
    # the default layers leave no trace in the record, as before they could be chosen
    assert "layers" not in detector_params(novelty.NoveltyDetector(embedder=embedder))
    with pytest.raises(InvalidInputError, match="contradicts"):
        novelty.NoveltyDetector(embedder=embedder, layers="final+s16")


def test_fit_on_the_command_line_records_layers_and_trust_support(tmp_path, textile_paths, capsys):
    from novelty.cli import EXIT_OK, EXIT_USAGE, main

    train = tmp_path / "train"
    train.mkdir()
    rows = ["path,label"]
    for kind, paths in (("nominal", textile_paths["nominal"][:50]), ("defect", textile_paths["global"][:50])):
        for p in paths:
            (train / f"{kind}_{p.name}").symlink_to(p)
            rows.append(f"{kind}_{p.name},{kind}")
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    out = tmp_path / "det"
    args = ["fit", str(train), "--out", str(out), "--labels", str(tmp_path / "labels.csv")]
    assert main([*args, "--layers", "final+s16", "--trust-support", "1.35"]) == EXIT_OK
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backbone"]["layers"] == ["final", "s16"]
    assert manifest["trust"]["support_factor"] == 1.35
    det = novelty.NoveltyDetector.load(out)
    assert det.trust_support == 1.35 and det.state_.trust.factor == 1.35 and det.layers == ("final", "s16")
    params, _ = params_from_artifact(out)
    assert params["trust"]["support"] == 1.35 and params["layers"] == ["final", "s16"]
    assert params["trust"]["margin"] == det.trust_margin == det.state_.trust.margin == 1.2  # default
    assert build_detector(params).trust_support == 1.35
    # what a retrain builds: the champion's own embedder, the recorded parameters, the same config hash
    challenger = build_detector(params, embedder=det.embedder)
    assert challenger.layers == ("final", "s16") and challenger.trust_support == 1.35
    assert config_hash(detector_params(challenger)) == config_hash(params)
    capsys.readouterr()
    assert main([*args, "--layers", "final+x16"]) == EXIT_USAGE
    assert "unknown embedding layer 'x16'" in capsys.readouterr().err
    assert main([*args, "--trust-support", "0.5"]) == EXIT_USAGE
    assert main([*args, "--trust-margin", "0.9"]) == EXIT_USAGE
    assert main([*args, "--trust-margin", "none"]) == EXIT_OK
    assert novelty.NoveltyDetector.load(out).trust_margin is None
    assert "margin" not in params_from_artifact(out)[0]["trust"]
