"""Patch-level kNN (PatchCore): coreset, local aggregation, anomaly maps, the scorer against numpy references,
and — slow, on real textile images — the detector path (fit, calibrate, save, load, score, maps, batch, report)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from novelty.batch.maps import decode_map_png, encode_map_png, overlay_map
from novelty.errors import InvalidInputError, NotFittedError
from novelty.patches import anomaly_maps, check_layers, gaussian_blur, greedy_coreset, local_average
from novelty.scorers import REGISTRY, PatchKNNScorer, create_scorer


# --- coreset ---------------------------------------------------------------------------------------------
def coreset_reference(x: np.ndarray, n_select: int, start: int) -> list[int]:
    """Farthest-point selection, written plainly in float64."""
    x = x.astype(np.float64)
    sel = [start]
    mind = ((x - x[start]) ** 2).sum(1)
    for _ in range(n_select - 1):
        i = int(np.argmax(mind))
        sel.append(i)
        mind = np.minimum(mind, ((x - x[i]) ** 2).sum(1))
    return sel


def test_coreset_equals_farthest_point_reference(rng):
    x = rng.normal(size=(300, 6)).astype(np.float32)
    got = greedy_coreset(x, 25, projection_dim=None, seed=3)
    assert got.dtype == np.int64 and len(set(got.tolist())) == 25
    assert got.tolist() == coreset_reference(x, 25, int(got[0]))


def test_coreset_covers_better_than_random_and_keeps_outliers(rng):
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    x[7] += 40.0  # one far outlier: k-center must take it
    sel = greedy_coreset(x, 40, projection_dim=16, seed=0)
    assert 7 in sel.tolist()

    def radius(idx: np.ndarray) -> float:
        d = ((x[:, None, :] - x[idx][None]) ** 2).sum(-1)
        return float(np.sqrt(d.min(1)).max())

    rand = np.random.default_rng(0).choice(len(x), 40, replace=False)
    assert radius(sel) < radius(rand)


def test_coreset_edge_cases(rng):
    x = rng.normal(size=(10, 4)).astype(np.float32)
    assert greedy_coreset(x, 10).tolist() == list(range(10))
    assert greedy_coreset(x, 50).tolist() == list(range(10))
    with pytest.raises(InvalidInputError):
        greedy_coreset(np.zeros((0, 4), np.float32), 3)
    with pytest.raises(InvalidInputError):
        greedy_coreset(x, 0)


# --- aggregation and maps ----------------------------------------------------------------------------------
def test_local_average_equals_reference(rng):
    x = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)
    got = local_average(torch.from_numpy(x)).numpy()
    ref = np.empty_like(x)
    for i in range(5):
        for j in range(6):
            ref[:, :, i, j] = x[:, :, max(0, i - 1) : i + 2, max(0, j - 1) : j + 2].mean(axis=(2, 3))
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_anomaly_maps_shape_upsampling_and_smoothing():
    scores = np.zeros((2, 8, 8), np.float32)
    scores[0, 2, 5] = 1.0
    scores[1] = 3.0
    maps = anomaly_maps(scores, 64, sigma=4.0)
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    np.testing.assert_allclose(maps[1], 3.0, atol=1e-5)  # a constant map stays constant
    r, c = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    assert 2 * 8 <= r < 3 * 8 and 5 * 8 <= c < 6 * 8  # the peak stays over its patch
    plain = anomaly_maps(scores, (64, 32), sigma=0.0)
    assert plain.shape == (2, 64, 32)
    assert maps[0].max() < plain[0].max()  # smoothing spreads the peak
    np.testing.assert_allclose(maps[0].sum(), anomaly_maps(scores, 64, sigma=0.0)[0].sum(), rtol=0.05)


def test_gaussian_blur_is_symmetric_and_keeps_mass():
    m = torch.zeros(1, 41, 41)
    m[0, 20, 20] = 1.0
    b = gaussian_blur(m, 2.0)[0].numpy()
    np.testing.assert_allclose(b, b[::-1, :], atol=1e-7)
    np.testing.assert_allclose(b, b.T, atol=1e-7)
    assert abs(b.sum() - 1.0) < 1e-4 and np.argmax(b) == 20 * 41 + 20


def test_check_layers():
    assert check_layers([2, 3]) == (2, 3)
    for bad in ([], [3, 2], "23", [-1], [1.5]):
        with pytest.raises(InvalidInputError):
            check_layers(bad)


# --- the scorer --------------------------------------------------------------------------------------------
def nearest_reference(bank: np.ndarray, q: np.ndarray) -> np.ndarray:
    d = ((q[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1)
    return np.sqrt(d.min(1))


def test_patch_scores_equal_brute_force(rng):
    train = rng.normal(size=(6, 4, 4, 5)).astype(np.float32)
    s = PatchKNNScorer(coreset_fraction=0.25, seed=1).fit(train)
    assert s.bank_.shape == (24, 5)  # ceil(0.25 · 96)
    q = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)
    ps = s.patch_scores(q)
    assert ps.shape == (3, 4, 4)
    np.testing.assert_allclose(ps.ravel(), nearest_reference(s.bank_, q.reshape(-1, 5)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s.score(q), ps.reshape(3, -1).max(1), rtol=1e-6)  # image score = max patch


def test_full_bank_scores_training_patches_zero_and_finds_the_flaw(rng):
    train = rng.normal(size=(8, 6, 6, 4)).astype(np.float32)
    s = PatchKNNScorer(coreset_fraction=1.0, image_size=48, sigma=1.0).fit(train)
    np.testing.assert_allclose(s.patch_scores(train), 0.0, atol=1e-3)
    flawed = train[:2].copy()
    flawed[1, 4, 1] += 25.0  # one flawed patch
    scores, maps = s.score_maps(flawed)
    assert scores[1] > 20 and scores[0] < 1e-3  # higher = more novel
    assert maps.shape == (2, 48, 48)
    r, c = np.unravel_index(np.argmax(maps[1]), maps[1].shape)
    assert 4 * 8 <= r < 5 * 8 and 1 * 8 <= c < 2 * 8  # the map points at the flawed patch


def test_reweight_lowers_the_max_and_keeps_order(rng):
    train = rng.normal(size=(10, 5, 5, 6)).astype(np.float32)
    q = rng.normal(size=(6, 5, 5, 6)).astype(np.float32)
    q[:3, 2, 2] += np.array([4.0, 8.0, 16.0])[:, None]
    s_max = PatchKNNScorer(coreset_fraction=0.5).fit(train).score(q)
    s_rw = PatchKNNScorer(coreset_fraction=0.5, aggregate="reweight").fit(train).score(q)
    assert np.all(s_rw > 0) and np.all(s_rw <= s_max + 1e-9)
    assert s_rw[2] > s_rw[1] > s_rw[0]


def test_two_dimensional_input_is_one_patch_per_image(rng):
    train = rng.normal(size=(50, 8)).astype(np.float32)
    s = PatchKNNScorer(coreset_fraction=1.0).fit(train)
    q = rng.normal(size=(4, 8)).astype(np.float32)
    np.testing.assert_allclose(s.score(q), nearest_reference(train, q), rtol=1e-4)


def test_state_round_trip_and_registry(rng):
    assert REGISTRY["patch-knn"] is PatchKNNScorer and PatchKNNScorer.input_kind == "patches"
    s = create_scorer("patch-knn", coreset_fraction=0.1, layers=[1, 2]).fit(rng.normal(size=(4, 3, 3, 7)))
    back = PatchKNNScorer.from_state(s.get_params(), s.state_arrays())
    q = rng.normal(size=(2, 3, 3, 7))
    np.testing.assert_array_equal(back.score(q), s.score(q))
    assert back.grid_ == (3, 3) and back.get_params() == s.get_params()
    assert s.memory_bytes_ == s.bank_.nbytes == 4 * 7 * 4  # ceil(0.1 · 36) = 4 features of 7 float32
    with pytest.raises(InvalidInputError, match="memory bank"):
        PatchKNNScorer.from_state(s.get_params(), {"grid": np.array([3, 3])})
    with pytest.raises(InvalidInputError, match="NaN"):
        PatchKNNScorer.from_state(s.get_params(), {"bank": np.full((2, 7), np.nan), "grid": np.array([3, 3])})


def test_scorer_errors(rng):
    s = PatchKNNScorer()
    with pytest.raises(NotFittedError):
        s.score(rng.normal(size=(1, 2, 2, 3)))
    s.fit(rng.normal(size=(2, 2, 2, 3)))
    with pytest.raises(InvalidInputError, match="channels"):
        s.score(rng.normal(size=(1, 2, 2, 4)))
    with pytest.raises(InvalidInputError, match="NaN"):
        s.score(np.full((1, 2, 2, 3), np.nan))
    with pytest.raises(InvalidInputError, match=r"\(n, h, w, c\)"):
        s.score(np.zeros((2, 3, 3)))
    for bad in (
        {"coreset_fraction": 0.0},
        {"coreset_fraction": 1.5},
        {"aggregate": "mean"},
        {"image_size": 8},
        {"layers": [3, 1]},
        {"sigma": -1},
    ):
        with pytest.raises(InvalidInputError):
            PatchKNNScorer(**bad)


# --- maps in results and reports ---------------------------------------------------------------------------
def test_map_png_round_trip_and_overlay():
    m = np.zeros((32, 32), np.float32)
    m[20:24, 4:8] = 5.0
    text = encode_map_png(m, (300, 150))
    grey = decode_map_png(text)
    assert grey is not None and grey.dtype == np.uint8 and grey.shape == (32, 64)  # 64 px wide, its aspect
    assert grey.max() == 255 and grey.min() == 0
    r, c = np.unravel_index(np.argmax(grey), grey.shape)
    assert 18 <= r < 26 and 6 <= c < 18
    assert encode_map_png(np.full((4, 4), np.nan)) == "" and decode_map_png("") is None
    with pytest.raises(InvalidInputError):
        decode_map_png("not base64!")
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (80, 40), (0, 0, 255)).save(buf, format="JPEG")
    out = np.asarray(Image.open(io.BytesIO(overlay_map(buf.getvalue(), text))).convert("RGB"), dtype=float)
    assert out.shape == (40, 80, 3)
    assert out[27, 15, 0] > 100  # red over the hot spot (rows 20–24 of 32, columns 8–16 of 64)
    assert out[5, 70, 0] < 60 and out[5, 70, 2] > 180  # the cold part keeps the image
