"""Every registered scorer can be served: a detector fitted with it answers 200 on ``/v1/score`` with the
verdict the library gives for the same image (the patch scorer used to answer 500: the service's scoring loop
had no patch pass)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient
from serve_support import street_jpegs  # tests/serve_support.py

import novelty
from novelty.datasets import textile
from novelty.scorers import REGISTRY
from novelty.serve.app import ServeConfig, create_app

TOKEN = "scorer-token-0123456789abcdef"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Fixed random ``resnet10t`` weights (a small convolutional backbone with intermediate stages)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path_factory.mktemp("weights") / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("scorer", sorted(REGISTRY))
def test_every_registered_scorer_is_served(scorer, weights, tmp_path):
    data = textile()
    images = data["nominal"][:40] + data["global"][:20]
    labels = ["dry"] * 40 + ["wet"] * 20
    det = novelty.NoveltyDetector(
        "resnet10t",
        weights=weights,
        scorers=(scorer,),
        calibration_fraction=0.35,
        num_workers=0,
        head={"max_epochs": 5},
    )
    det.fit(images, labels=labels, progress=False)
    path = det.save(tmp_path / "det")
    cfg = ServeConfig(path, flag_store=str(tmp_path / "flags"), api_tokens=[TOKEN], watch_interval_s=0)
    image = street_jpegs(1)[0]
    with TestClient(create_app(cfg)) as client:
        r = client.post(
            "/v1/score",
            files={"image": ("frame.jpg", image, "image/jpeg")},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    ref = novelty.load(path).score(image)
    assert body["scores"].keys() == {scorer}
    np.testing.assert_allclose(body["p_value"], ref.p_value, atol=1e-9)
    np.testing.assert_allclose(body["scores"][scorer], ref.scores[scorer], rtol=1e-4, atol=1e-5)
    assert body["trusted"] == ref.trusted and body["trust_rule"] == ref.trust_rule
