"""Embedder: shape/dtype/normalisation, determinism across batchings and workers, error records."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import novelty
from novelty.errors import EmptyImageError, InvalidInputError, NotAnImageError


def test_embeddings_are_normalised_float32(embedder, textile_paths):
    x = embedder.embed(textile_paths["nominal"][:5])
    assert x.shape == (5, embedder.dim) and embedder.dim == 1280
    assert x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_preprocessing_comes_from_the_model(embedder):
    cfg = embedder.data_config
    assert tuple(cfg["input_size"]) == (3, 224, 224)
    assert tuple(cfg["mean"]) == (0.5, 0.5, 0.5) and cfg["interpolation"] == "bicubic"
    assert embedder.min_size == 256  # 224 / crop_pct 0.875


@pytest.mark.slow
def test_same_result_whatever_the_batching_and_workers(textile_paths):
    paths = textile_paths["global"][:40]
    a = novelty.Embedder(batch_size=16, num_workers=0).embed(paths)
    b = novelty.Embedder(batch_size=7, num_workers=2).embed(paths)
    single = novelty.Embedder(num_workers=0)
    c = np.stack([single.embed_one(p) for p in paths[:3]])
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a[:3], c, atol=1e-5)


def test_accepts_paths_bytes_pil_and_arrays(embedder, textile_paths):
    p = textile_paths["nominal"][0]
    ref = embedder.embed([p])[0]
    img = Image.open(p)
    out = embedder.embed([str(p), p.read_bytes(), img, np.asarray(img.convert("RGB"))])
    np.testing.assert_allclose(out, np.tile(ref, (4, 1)), atol=1e-5)
    # an (n, H, W) grey stack is n images
    assert embedder.embed(np.zeros((2, 28, 28), dtype=np.uint8)).shape == (2, 1280)


def test_bad_inputs_raise_specific_errors_or_are_recorded(embedder, textile_paths, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture")
    good = textile_paths["nominal"][0]
    with pytest.raises(EmptyImageError, match=r"empty\.jpg"):
        embedder.embed([good, empty])
    res = embedder.embed_with_errors([empty, good, text])
    assert res.ok.tolist() == [False, True, False]
    assert isinstance(res.errors[0], EmptyImageError) and isinstance(res.errors[2], NotAnImageError)
    assert np.isnan(res.embeddings[[0, 2]]).all() and np.isfinite(res.embeddings[1]).all()
    with pytest.raises(InvalidInputError):
        embedder.embed(42)


def test_the_decode_thread_changes_no_embedding_and_loses_no_error(textile_paths, tmp_path):
    """The default decodes, stacks and lays out the next batch in a thread: the same numbers as one thing after
    the other, and a batch with only unreadable images is still a batch of error records."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\0" * 40)
    good = textile_paths["nominal"][:5]
    inputs = [bad, bad, *good[:3], bad, *good[3:]]  # batch of 2: all bad; then mixed batches
    ahead = novelty.Embedder(num_workers=0, batch_size=2)
    plain = novelty.Embedder(num_workers=0, batch_size=2, decode_thread=False)
    assert ahead.decode_thread and not plain.decode_thread
    a, b = ahead.embed_with_errors(inputs), plain.embed_with_errors(inputs)
    assert a.ok.tolist() == b.ok.tolist() == [False, False, True, True, True, False, True, True]
    np.testing.assert_array_equal(a.embeddings[a.ok], b.embeddings[b.ok])
    assert all("bad.jpg" in str(a.errors[i]) for i in (0, 1, 5))


def test_cache_keys_tell_other_arithmetic_apart(embedder):
    """Files of embeddings are keyed by what made the numbers: PyTorch fp32 by the fingerprint alone (as
    before), another precision or runtime beside it, never in its place."""
    assert embedder.cache_key == embedder.fingerprint[:12]
    bf16 = novelty.Embedder(device="cpu", precision="bf16")
    assert bf16.fingerprint == embedder.fingerprint
    assert bf16.cache_key == f"{embedder.fingerprint[:12]}-bf16"


@pytest.mark.slow
def test_errors_survive_worker_processes(tmp_path, textile_paths):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    paths = [*textile_paths["nominal"][:70], bad]
    res = novelty.Embedder(num_workers=2, batch_size=32).embed_with_errors(paths)
    assert res.ok.sum() == 70 and not res.ok[-1]
    assert "bad.png" in str(res.errors[-1])


def test_invalid_arguments():
    with pytest.raises(InvalidInputError, match="batch_size"):
        novelty.Embedder(batch_size=0)
    with pytest.raises(InvalidInputError, match="precision"):
        novelty.Embedder(precision="int4")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "bogus"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got 'bogus'"),
        ({"device": 3.5}, "device must be"),
        ({"batch_size": "32"}, "batch_size must be an integer, got the string '32'"),
        ({"batch_size": -4}, "batch_size must be an integer ≥ 1"),
        ({"num_workers": -1}, "num_workers must be an integer ≥ 0"),
        ({"max_pixels": 0}, "max_pixels must be an integer ≥ 1"),
        ({"draft": 1}, "draft must be True or False"),
        ({"backbone": None}, "backbone must be a timm model name"),
        ({"weights": 42}, "weights must be None, 'random' or a path"),
    ],
)
def test_more_invalid_arguments(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        novelty.Embedder(**kwargs)


def test_dim_is_what_the_model_outputs_when_num_features_differs(tmp_path):
    """mobilenetv3's pooled output (1024) is wider than timm's ``num_features`` (288): embedding must work."""
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=0)
    assert model.num_features != 1024  # the case this test is about
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    emb = novelty.Embedder("mobilenetv3_small_050", weights=tmp_path / "w.safetensors", num_workers=0)
    out = emb.embed([np.full((64, 64, 3), 128, dtype=np.uint8)])
    assert emb.dim == 1024 and out.shape == (1, 1024)
