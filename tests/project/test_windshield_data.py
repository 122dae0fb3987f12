"""The windshield scenario's data, on the real street video of opencv-doc (small sizes, a few blocks)."""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from novelty.datasets import DatasetNotInstalledError
from novelty.datasets import windshield as W
from novelty.errors import InvalidInputError, NoveltyError, UnknownNameError

pytestmark = pytest.mark.slow  # decodes the street video

SIZE = (160, 120)  # width, height
N_FRAMES = 200  # 8 blocks of 25: train 4, calibration 2, test 2
GRAY = np.array([0.299, 0.587, 0.114])


def brightness(x: np.ndarray) -> float:
    return float((x.astype(np.float64) @ GRAY).mean())


def contrast(x: np.ndarray) -> float:
    """Mean over images of the standard deviation of their gray levels."""
    return float((x.astype(np.float64) @ GRAY).std(axis=(-2, -1)).mean())


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("windshield-cache")


@pytest.fixture(scope="session")
def frames(cache) -> np.ndarray:
    return W.street_frames(SIZE, cache_dir=cache)


@pytest.fixture(scope="session")
def sample(frames) -> np.ndarray:
    return frames[::100]  # 8 frames spread over the video


@pytest.fixture(scope="session")
def scenario(cache, frames) -> W.WindshieldScenario:
    return W.windshield_scenario(seed=0, size=SIZE, n_frames=N_FRAMES, cache_dir=cache)


def assert_same_set(a: W.ConditionSet, b: W.ConditionSet) -> None:
    for name in ("images", "labels", "groups", "frames"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


# --- frames ---------------------------------------------------------------------------------------
def test_street_frames_count_shape_and_cache(frames, cache):
    assert frames.shape == (795, 120, 160, 3)
    assert frames.dtype == np.uint8
    assert 60 < brightness(frames) < 180 and contrast(frames) > 30  # a real daylight scene
    assert not np.array_equal(frames[0], frames[-1])
    files = sorted(p.name for p in cache.iterdir())
    assert any(name.endswith("-160x120.npy") for name in files)
    assert not [name for name in files if name.endswith(".tmp")]  # atomic write left nothing behind
    again = W.street_frames(SIZE, cache_dir=cache)
    np.testing.assert_array_equal(again, frames)


def test_missing_video_names_the_install_step(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "OPENCV_DOC_DIR", tmp_path / "no-opencv-doc")
    monkeypatch.delenv("NOVELTY_OPENCV_DOC", raising=False)
    for call in (W.find_video, lambda: W.street_frames(SIZE, cache_dir=tmp_path), W.windshield_scenario):
        with pytest.raises(DatasetNotInstalledError, match="opencv-doc") as info:
            call()
        assert isinstance(info.value, NoveltyError)
        assert "make windshield-data" in str(info.value)


def test_missing_opencv_names_the_install_step(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(DatasetNotInstalledError, match="opencv-python-headless"):
        W.street_frames(SIZE, cache=False)


def test_gzipped_video_is_unpacked_into_the_cache(tmp_path, monkeypatch):
    data = tmp_path / "doc" / "examples" / "data"
    data.mkdir(parents=True)
    with W.find_video().open("rb") as src, gzip.open(data / "vtest.avi.gz", "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    monkeypatch.setenv("NOVELTY_CACHE", str(tmp_path / "cache"))
    video = W.find_video(tmp_path / "doc")
    assert video.parent == tmp_path / "cache" / "windshield"
    assert video.read_bytes() == W.find_video().read_bytes()


# --- conditions -----------------------------------------------------------------------------------
def test_conditions_are_deterministic_and_pure(sample):
    before = sample.copy()
    for condition in ("wet", "tunnel", "ice", "fog", "snow", "tunnel+wet"):
        a = W.apply_condition(sample, condition, 3, seed=7)
        b = W.apply_condition(sample, condition, 3, seed=7)
        assert a.dtype == np.uint8 and a.shape == sample.shape
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, W.apply_condition(sample, condition, 3, seed=8)), condition
    np.testing.assert_array_equal(sample, before)


def test_frame_ids_make_a_frame_independent_of_its_batch(frames):
    ids = np.array([3, 250, 700])
    batch = W.apply_condition(frames[ids], "snow+wet", 3, 0, frame_ids=ids)
    alone = W.apply_condition(frames[250], "snow+wet", 3, 0, frame_ids=[250])
    np.testing.assert_array_equal(batch[1], alone)


def test_conditions_change_images_in_the_expected_direction(sample):
    dry = sample
    out = {c: W.apply_condition(dry, c, 3, 0) for c in ("wet", "tunnel", "ice", "fog", "snow", "tunnel+wet")}
    # drops on every frame
    per_frame = np.abs(out["wet"].astype(int) - dry).mean(axis=(1, 2, 3))
    assert (per_frame > 1.0).all()
    # a dark tunnel under orange sodium lamps
    assert brightness(out["tunnel"]) < 0.3 * brightness(dry)
    assert contrast(out["tunnel"]) < 0.3 * contrast(dry)
    red, green, blue = out["tunnel"].reshape(-1, 3).mean(axis=0)
    assert red > green > blue
    # fog washes out contrast; frost and snow brighten
    assert contrast(out["fog"]) < 0.8 * contrast(dry)
    assert brightness(out["ice"]) > brightness(dry) + 20
    assert brightness(out["snow"]) > brightness(dry) + 20
    # composites apply in physical order: tunnel+wet is the wet frame darkened
    np.testing.assert_array_equal(out["tunnel+wet"], W.apply_condition(out["wet"], "tunnel", 3, 0))
    assert brightness(out["tunnel+wet"]) < 0.3 * brightness(dry)
    np.testing.assert_array_equal(W.apply_condition(dry, "dry", 3, 0), dry)


def test_wet_severity_scales_the_drops(sample):
    diffs = [np.abs(W.apply_condition(sample, "wet", s, 0).astype(int) - sample).mean() for s in (1, 2, 3)]
    assert diffs[0] < diffs[1] < diffs[2]
    np.testing.assert_array_equal(  # spatter 4-5 is mud: wet caps at 3
        W.apply_condition(sample, "wet", 5, 0), W.apply_condition(sample, "wet", 3, 0)
    )


def test_bad_arguments(sample):
    with pytest.raises(UnknownNameError, match="rain"):
        W.apply_condition(sample, "rain", 3, 0)
    with pytest.raises(InvalidInputError):
        W.apply_condition(sample.astype(np.float32), "wet", 3, 0)
    with pytest.raises(InvalidInputError):
        W.apply_condition(sample, "wet", 6, 0)
    with pytest.raises(InvalidInputError):
        W.apply_condition(sample, "wet+wet", 3, 0)
    with pytest.raises(InvalidInputError):
        W.apply_condition(sample[:, :20, :20], "wet", 3, 0)


# --- scenario -------------------------------------------------------------------------------------
def test_split_is_by_whole_blocks(scenario):
    parts = {"train": scenario.train, "calibration": scenario.calibration, "test": scenario.test}
    all_frames = np.concatenate([p.frames for p in parts.values()])
    assert sorted(all_frames.tolist()) == list(range(N_FRAMES))  # every frame exactly once
    blocks = {}
    for name, part in parts.items():
        assert part.images.shape == (len(part), 120, 160, 3) and part.images.dtype == np.uint8
        np.testing.assert_array_equal(part.groups, part.frames // scenario.block)
        blocks[name] = set(part.groups.tolist())
        for b in blocks[name]:  # whole blocks only
            assert set(part.frames[part.groups == b].tolist()) == set(range(b * 25, (b + 1) * 25))
    assert not (blocks["train"] & blocks["calibration"] or blocks["train"] & blocks["test"])
    assert not blocks["calibration"] & blocks["test"]
    assert [len(blocks[n]) for n in parts] == [4, 2, 2]  # 50/25/25 by blocks
    assert blocks["train"] == {0, 1, 4, 5} and blocks["calibration"] == {2, 6} and blocks["test"] == {3, 7}


def test_labels_are_balanced_in_every_block_and_match_the_images(scenario, frames):
    for part in (scenario.train, scenario.calibration, scenario.test):
        for b in np.unique(part.groups):
            assert part.labels[part.groups == b].sum() in (12, 13)
        dry = part.labels == 0
        np.testing.assert_array_equal(part.images[dry], frames[part.frames[dry]])
        wet = W.apply_condition(frames[part.frames[~dry]], "wet", 3, 0, frame_ids=part.frames[~dry])
        np.testing.assert_array_equal(part.images[~dry], wet)


def test_production_sets_are_the_test_frames_under_new_conditions(scenario, frames):
    test = scenario.test
    assert set(scenario.production) == {"tunnel", "ice", "fog", "snow"}
    for name, prod in scenario.production.items():
        np.testing.assert_array_equal(prod.labels, test.labels)
        np.testing.assert_array_equal(prod.frames, test.frames)
        np.testing.assert_array_equal(prod.groups, test.groups)
        assert prod.images.shape == test.images.shape and prod.images.dtype == np.uint8
        conditions = scenario.production_conditions(name)
        assert conditions[int(np.argmax(test.labels))] == f"{name}+wet"
        i = int(np.argmin(test.labels))
        assert conditions[i] == name
        expected = W.apply_condition(frames[test.frames[i]], name, 3, 0, frame_ids=[test.frames[i]])
        np.testing.assert_array_equal(prod.images[i], expected)
    assert brightness(scenario.production["tunnel"].images) < 0.3 * brightness(test.images)


@pytest.mark.slow
def test_scenario_is_deterministic_and_cached(scenario, cache, tmp_path):
    names = [p.name for p in cache.iterdir() if p.name.startswith("scenario-")]
    assert len(names) == 1 and names[0].endswith(".npz")
    with np.load(cache / names[0], allow_pickle=False) as data:
        assert "train__images" in data.files
    cached = W.windshield_scenario(seed=0, size=SIZE, n_frames=N_FRAMES, cache_dir=cache)
    for frames_file in cache.glob("vtest-*.npy"):  # rebuild from the cached frames, not from the video
        (tmp_path / frames_file.name).hardlink_to(frames_file)
    fresh = W.windshield_scenario(seed=0, size=SIZE, n_frames=N_FRAMES, cache_dir=tmp_path)
    for a in (cached, fresh):
        for part in ("train", "calibration", "test"):
            assert_same_set(getattr(a, part), getattr(scenario, part))
        for name in scenario.production:
            assert_same_set(a.production[name], scenario.production[name])
    other = W.windshield_scenario(seed=1, size=SIZE, n_frames=N_FRAMES, cache_dir=tmp_path)
    assert not np.array_equal(other.train.labels, scenario.train.labels)
    np.testing.assert_array_equal(other.train.frames, scenario.train.frames)  # same blocks, other labels


def test_unwritable_cache_only_warns(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="cannot write the cache"):
        W._write_cache(blocker / "windshield" / "x.npy", lambda fh: fh.write(b"x"))
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_street_dataset_labels_each_condition():
    images, labels = W.street_dataset(("dry", "glare", "tunnel"), severity=1, frames=[3, 4])
    assert images.shape == (6, 240, 320, 3) and images.dtype == np.uint8
    assert labels.tolist() == ["dry", "dry", "glare", "glare", "tunnel", "tunnel"]
    np.testing.assert_array_equal(images[:2], W.street_frames()[[3, 4]])
    assert images[2:4].mean() > images[:2].mean() + 10  # glare washes out
    assert images[4:].mean() < images[:2].mean() / 2  # a tunnel is dark
    with pytest.raises(InvalidInputError, match="conditions"):
        W.street_dataset("dry")
    with pytest.raises(InvalidInputError, match="frames"):
        W.street_dataset(("dry",), frames=[10_000])
