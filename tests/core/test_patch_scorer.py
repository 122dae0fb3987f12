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
    assert got.tolist() == coreset_reference(x, 25, int(got[0]))  # one stage: exact, in selection order


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
    s = PatchKNNScorer(coreset_fraction=0.25, seed=1, position_scale=False).fit(train)
    assert s.bank_.shape == (24, 5)  # ceil(0.25 · 96)
    q = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)
    ps = s.patch_scores(q)
    assert ps.shape == (3, 4, 4)
    np.testing.assert_allclose(ps.ravel(), nearest_reference(s.bank_, q.reshape(-1, 5)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s.score(q), ps.reshape(3, -1).max(1), rtol=1e-6)  # image score = max patch


def test_full_bank_scores_training_patches_zero_and_finds_the_flaw(rng):
    train = rng.normal(size=(8, 6, 6, 4)).astype(np.float32)
    s = PatchKNNScorer(coreset_fraction=1.0, image_size=48, sigma=1.0, position_scale=False).fit(train)
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
    s_max = PatchKNNScorer(coreset_fraction=0.5, position_scale=False).fit(train).score(q)
    s_rw = (
        PatchKNNScorer(coreset_fraction=0.5, aggregate="reweight", position_scale=False).fit(train).score(q)
    )
    assert np.all(s_rw > 0) and np.all(s_rw <= s_max + 1e-9)
    assert s_rw[2] > s_rw[1] > s_rw[0]


def test_two_dimensional_input_is_one_patch_per_image(rng):
    train = rng.normal(size=(50, 8)).astype(np.float32)
    s = PatchKNNScorer(coreset_fraction=1.0, position_scale=False).fit(train)
    q = rng.normal(size=(4, 8)).astype(np.float32)
    np.testing.assert_allclose(s.score(q), nearest_reference(train, q), rtol=1e-4)


def test_state_round_trip_and_registry(rng):
    assert REGISTRY["patch-knn"] is PatchKNNScorer and PatchKNNScorer.input_kind == "patches"
    s = create_scorer("patch-knn", coreset_fraction=0.1, layers=[1, 2]).fit(rng.normal(size=(4, 3, 3, 7)))
    back = PatchKNNScorer.from_state(s.get_params(), s.state_arrays())
    q = rng.normal(size=(2, 3, 3, 7))
    np.testing.assert_array_equal(back.score(q), s.score(q))
    assert back.grid_ == (3, 3) and back.get_params() == s.get_params()
    assert s.memory_bytes_ == s.bank_.nbytes == 3 * 7 * 4  # 3 images in the bank: ceil(0.1 · 27) = 3 features
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
        {"reference_fraction": 0.9},
        {"pad": -4},
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


def test_two_stage_coreset_covers_nearly_as_well_as_one_stage(rng):
    centres = rng.normal(scale=6.0, size=(40, 8))
    x = (centres[rng.integers(40, size=6000)] + rng.normal(size=(6000, 8))).astype(np.float32)
    x[4321] += 60.0  # an outlier deep inside one chunk
    one = greedy_coreset(x, 60, projection_dim=None, chunk_rows=None)
    two = greedy_coreset(x, 60, projection_dim=None, chunk_rows=1000)  # 6 chunks: two stages
    assert len(set(two.tolist())) == 60 and 4321 in two.tolist()

    def radius(idx: np.ndarray) -> float:
        d = ((x[:, None, :].astype(np.float64) - x[idx][None]) ** 2).sum(-1)
        return float(np.sqrt(d.min(1)).max())

    assert radius(two) <= 1.5 * radius(one)


# --- the detector on real textile images (slow: backbone passes) ---------------------------------------------
PATCH = {"image_size": 256, "coreset_fraction": 0.01}


@pytest.fixture(scope="module")
def patch_detector(embedder, textile_paths):
    import novelty

    det = novelty.NoveltyDetector(scorers={"knn": None, "patch-knn": PATCH}, embedder=embedder, alpha=0.2)
    return det.fit(textile_paths["nominal"][:80])


@pytest.mark.slow
def test_detector_with_patch_scorer_scores_saves_and_loads(patch_detector, textile_paths, tmp_path):
    import novelty

    det = patch_detector
    assert det.needs_patches and [s.name for s in det.scorers_] == ["knn", "patch-knn"]
    local, nominal = textile_paths["local"][:12], textile_paths["nominal"][-12:]  # never fitted on
    inputs = [*local, *nominal, tmp_path / "missing.jpg"]
    b = det.score_batch(inputs, anomaly_maps=True)
    assert b.errors[-1] is not None and b.errors[-1].startswith("not_found") and not b.is_novel[-1]
    assert b.anomaly_maps is not None and b.anomaly_maps.shape == (25, 256, 256)
    assert np.isnan(b.anomaly_maps[-1]).all() and np.isfinite(b.anomaly_maps[:-1]).all()
    patch = b.scores["patch-knn"]
    assert patch[:12].mean() > patch[12:24].mean()  # local defects score higher, patch by patch
    assert b[0].anomaly_map is not None and b[-1].anomaly_map is None
    assert det.score_batch(local[:2]).anomaly_maps is None  # maps only on request

    det.save(tmp_path / "det")
    back = novelty.load(tmp_path / "det", embedder=det.embedder)
    b2 = back.score_batch(inputs, anomaly_maps=True)
    np.testing.assert_array_equal(b2.scores["patch-knn"], patch)
    np.testing.assert_array_equal(b2.p_value, b.p_value)
    np.testing.assert_array_equal(b2.anomaly_maps, b.anomaly_maps)
    v = back.score(local[0], anomaly_map=True)
    assert v.anomaly_map is not None and v.anomaly_map.shape == (256, 256)
    assert v.scores["patch-knn"] == pytest.approx(float(patch[0]), rel=1e-5)
    assert back.score(local[0]).anomaly_map is None


@pytest.mark.slow
def test_patch_detector_needs_patch_features(patch_detector, textile_paths, embedder):
    import novelty

    det = patch_detector
    x = embedder.embed(textile_paths["local"][:2])
    with pytest.raises(InvalidInputError, match="patch features"):
        det.score_embeddings(x)
    fresh = novelty.NoveltyDetector(scorers=("patch-knn",), embedder=embedder)
    with pytest.raises(InvalidInputError, match="needs the images' patch features"):
        fresh.fit_embeddings(np.repeat(x, 20, axis=0))
    knn_only = novelty.NoveltyDetector(embedder=embedder, alpha=0.2).fit_embeddings(
        embedder.embed(textile_paths["nominal"][:40])
    )
    with pytest.raises(InvalidInputError, match="patch scorer"):
        knn_only.score_embeddings(x, anomaly_maps=True)
    assert not knn_only.needs_patches


@pytest.mark.slow
def test_batch_results_carry_maps_of_novel_images_and_the_report_overlays_them(
    patch_detector, textile_paths, tmp_path
):
    from novelty.batch import score_inputs
    from novelty.batch.report import report_from_files
    from novelty.batch.results import read_results

    folder = tmp_path / "inbox"
    folder.mkdir()
    for p in [*textile_paths["local"][:6], *textile_paths["nominal"][-6:]]:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    det = patch_detector
    det.save(tmp_path / "det")
    summary = score_inputs(det, [folder], tmp_path / "r.jsonl", maps=True)
    rows = read_results(summary.out)
    assert len(rows) == 12 and summary.n_novel > 0
    for r in rows:
        assert bool(r["anomaly_map"]) == bool(r["is_novel"]), r["key"]
        if r["anomaly_map"]:
            grey = decode_map_png(r["anomaly_map"])
            assert grey is not None and grey.shape == (64, 64)  # 250 × 250 images → 64 × 64
    html = report_from_files(summary.out, tmp_path / "det", tmp_path / "r.html").read_text()
    assert html.count('alt="anomaly map of ') == min(summary.n_novel, 24)
    with pytest.raises(InvalidInputError, match="patch scorer"):
        import novelty

        score_inputs(
            novelty.NoveltyDetector(embedder=det.embedder, alpha=0.2).fit(textile_paths["nominal"][:40]),
            [folder],
            tmp_path / "r2.jsonl",
            maps=True,
        )


def test_position_scale_divides_by_each_cells_typical_distance(rng):
    train = rng.normal(size=(40, 4, 4, 3)).astype(np.float32)
    train[:, 0, 0] *= 5.0  # a noisy corner (like a border): large distances even on nominal images
    s = PatchKNNScorer(coreset_fraction=1.0, reference_fraction=0.25).fit(train)
    assert s.bank_.shape[0] == 30 * 16  # 10 of 40 images kept out of the bank, as the reference
    assert s.cell_scale_.shape == (4, 4) and s.cell_scale_[0, 0] > 2.0 * np.median(s.cell_scale_)
    q = rng.normal(size=(30, 4, 4, 3)).astype(np.float32)
    q[:, 0, 0] *= 5.0
    raw = nearest_reference(s.bank_, q.reshape(-1, 3)).reshape(30, 4, 4)
    np.testing.assert_allclose(s.patch_scores(q), raw / s.cell_scale_, rtol=1e-4)
    worst = s.patch_scores(q).reshape(30, -1).argmax(1)
    assert np.mean(worst == 0) < 0.5 and np.mean(raw.reshape(30, -1).argmax(1) == 0) > 0.5
    with pytest.raises(InvalidInputError, match="grid"):
        s.score(rng.normal(size=(1, 5, 5, 3)))


def test_score_help_offers_maps(capsys):
    from novelty.cli import main

    assert main(["score", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--maps" in text and "patch scorer" in text


def _same_verdicts(a, b) -> None:
    """Every field of two BatchVerdicts equal (NaN equal to NaN); numbers within float noise, as the backbone's
    and the patch pass's arithmetic depends slightly on which images share a forward pass."""
    import dataclasses

    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict):
            assert x.keys() == y.keys(), f.name
            for k in x:
                _same_array(x[k], y[k], f"{f.name}[{k}]")
        elif isinstance(x, np.ndarray):
            _same_array(x, y, f.name)
        else:
            assert list(x) == list(y) if isinstance(x, (list, tuple)) else x == y, f.name


def _same_array(x: np.ndarray, y: np.ndarray, name: str) -> None:
    if np.issubdtype(x.dtype, np.floating):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, equal_nan=True, err_msg=name)
    else:
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.slow
def test_score_batch_runs_the_one_loop_batch_by_batch(patch_detector, textile_paths, tmp_path):
    """score_batch is iter_score's batches joined, and gives what embedding everything at once and scoring it in
    one call gives (the patch pass included), whatever the batch size."""
    from novelty.images import describe_source

    det = patch_detector
    bad = tmp_path / "broken.jpg"
    data = textile_paths["local"][0].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    inputs = [*textile_paths["local"][:3], bad, *textile_paths["nominal"][-3:], tmp_path / "missing.jpg"]
    size = det.embedder.batch_size
    try:
        det.embedder.batch_size = 3  # the backbone's numbers depend on its batch: the same for both
        res = det.embedder.embed_with_errors(inputs)
        pres = det.patch_features(inputs)
        errs = [e if e is not None else pe for e, pe in zip(res.errors, pres.errors, strict=True)]
        reference = det.score_embeddings(
            res.embeddings,
            sources=[describe_source(s) for s in inputs],
            errors=[None if e is None else f"{e.reason_code}: {e.reason}" for e in errs],
            patches=pres.features,
            anomaly_maps=True,
        )
        batches = list(det.iter_score(inputs, anomaly_maps=True))
        assert [b.indices.tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]
        joined = det.score_batch(inputs, anomaly_maps=True)
    finally:
        det.embedder.batch_size = size
    _same_verdicts(joined, reference)
    assert joined.errors[3].startswith("truncated") and joined.errors[7].startswith("not_found")
    named = next(det.iter_score(inputs[:2], names=["a", "b"]))
    assert named.verdicts.sources == ["a", "b"] and named.sizes.shape == (2, 2)
    assert len(det.score_batch([])) == 0
