"""The windshield story: a rain-on-windshield classifier that is confidently wrong on conditions it never saw.

A camera behind a car's windshield films a street. A small classifier is trained to say whether the
windshield is **dry (label 0)** or **wet (label 1)**, on daylight frames only. In production the car
drives into conditions that were never in the training data — a dark **tunnel** under sodium lamps,
an **ice**-frosted windshield, **fog**, **snow** — and the classifier still answers "dry" or "wet",
often with high confidence. A novelty detector fitted on the training frames should flag those frames.

Data
    All frames of ``vtest.avi`` (795 frames, 768×576, 10 fps, a pedestrian street scene) that ships in
    Debian's ``opencv-doc`` package, read with OpenCV, converted to RGB and resized (default 320×240).

Conditions (:func:`apply_condition`, all on uint8 RGB frames, deterministic given ``seed``)
    ``dry``     the frame itself.
    ``wet``     ``imagecorruptions.spatter`` — water drops on the lens. Spatter severities 4–5 are *mud*
                splashes, not rain, so ``wet`` uses spatter severity ``min(severity, 3)``.
    ``tunnel``  a hard darkening (gain 0.30/0.25/0.20/0.15/0.10 for severity 1–5, ±10 % per frame),
                partial desaturation toward an orange sodium-lamp cast (channel gains R 1.0, G 0.78,
                B 0.45), a faint orange ambient glow and Gaussian sensor noise (σ 1.5–3.5 levels, as a
                camera at high gain). Mean gray level falls from ~120 to ~23. Own transform, not from
                imagecorruptions.
    ``ice``     ``imagecorruptions.frost`` — frost crystals on the glass.
    ``fog``     ``imagecorruptions.fog`` — plasma-fractal haze; lowers contrast.
    ``snow``    ``imagecorruptions.snow`` — falling snow streaks, brighter image.
    ``glare``   ``imagecorruptions.brightness`` — low sun straight into the lens: the picture washes out.
                Not one of the story's production conditions; the benchmark's street scenario uses it.
    Composites join names with ``+`` (``"tunnel+wet"``) and are applied in a fixed physical order:
    scene conditions first (``fog``, ``snow``), then the drops on the lens (``wet``), then what acts on
    the whole picture including the drops (``ice`` on the glass, ``glare``, ``tunnel`` lighting). So
    ``tunnel+wet`` = spatter, then darken. Each component draws its randomness from
    ``(seed, component, frame id)``, so the drops of a frame are the same in ``wet`` and ``tunnel+wet``
    and do not depend on which other frames are in the batch.

Split (:func:`windshield_scenario`)
    The video is cut into contiguous blocks of ``block`` frames (default 25 = 2.5 s), dealt round-robin
    in a cycle of 4: block 0 → train, 1 → train, 2 → calibration, 3 → test, 4 → train, … so the ratio is
    50/25/25 by blocks. Never frame by frame: neighbouring frames are near duplicates and would leak.
    Within every block a seeded random half of the frames is made wet (label 1), the rest stay dry, so
    the labels are balanced in every part and the classifier must look at the drops, not at the scene.
    ``groups`` hold the block id of each image (for grouped calibration / cross-validation). The four
    production sets are the test frames (same order, same labels) with the condition applied: dry test
    frames get ``"<condition>"``, wet ones ``"<condition>+wet"``.

Caches (``$NOVELTY_CACHE`` or ``~/.cache/novelty``, subfolder ``windshield``): the decoded frames as one
``.npy`` per size, and each scenario as an uncompressed ``.npz`` keyed by its parameters; both written
atomically (temporary file + ``os.replace``) and read with ``allow_pickle=False``.

Install: ``make windshield-data`` (``apt-get install opencv-doc``; ``pip install --no-deps imagecorruptions``;
``pip install -e '.[windshield]'``). imagecorruptions 1.1.2 predates NumPy 2 and scikit-image 0.19+;
:mod:`novelty.datasets.corruptions` adapts it for the duration of each call only (see there).
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from novelty.datasets import DatasetNotInstalledError
from novelty.datasets.cache import atomic_file, cache_root, write_cache
from novelty.datasets.corruptions import corrupt
from novelty.errors import InvalidInputError, UnknownNameError

__all__ = [
    "BASE_CONDITIONS",
    "PRODUCTION_CONDITIONS",
    "ConditionSet",
    "WindshieldScenario",
    "apply_condition",
    "cache_dir",
    "contact_sheet",
    "find_video",
    "street_dataset",
    "street_frames",
    "windshield_scenario",
]

#: Where Debian's ``opencv-doc`` puts its files; ``vtest.avi`` is under ``examples/data``.
OPENCV_DOC_DIR = Path("/usr/share/doc/opencv-doc")
VIDEO_NAME = "vtest.avi"
INSTALL_HINT = (
    "run `make windshield-data` (as root it installs Debian's opencv-doc; otherwise it unpacks the package "
    "into .cache/opencv-doc), or by hand: `apt-get install opencv-doc` (as root) and "
    "`pip install --no-deps imagecorruptions && pip install 'novelty[windshield]'`"
)

#: Conditions that can be combined with ``+``, in the order they are applied.
BASE_CONDITIONS: tuple[str, ...] = ("fog", "snow", "wet", "ice", "glare", "tunnel")
#: The conditions the classifier never sees in training; each comes as dry and wet variants.
PRODUCTION_CONDITIONS: tuple[str, ...] = ("tunnel", "ice", "fog", "snow")
_COMPONENT_CODE = {"wet": 1, "tunnel": 2, "ice": 3, "fog": 4, "snow": 5, "glare": 6}
_SPLIT_CYCLE: tuple[str, ...] = ("train", "train", "calibration", "test")
_SCENARIO_FORMAT = 1  # bump when a transform or the split changes, so old caches are not reused

# tunnel: per severity 1..5
_TUNNEL_GAIN = (0.30, 0.25, 0.20, 0.15, 0.10)
_TUNNEL_NOISE = (1.5, 2.0, 2.5, 3.0, 3.5)
_SODIUM_CAST = np.array([1.0, 0.78, 0.45], dtype=np.float32)  # R, G, B gains: orange
_SODIUM_GLOW = np.array([6.0, 3.5, 1.0], dtype=np.float32)  # faint orange ambient light, 0..255 scale
_TUNNEL_DESATURATE = 0.5  # sodium light is nearly monochromatic: colours wash out


# --- cache ----------------------------------------------------------------------------------------
def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The folder for windshield caches: ``override``, else ``$NOVELTY_CACHE/windshield``, else ``~/.cache/novelty/windshield``."""
    if override is not None:
        return Path(override)
    return cache_root("windshield")


_atomic_file = atomic_file


def _write_cache(path: Path, write: Callable[[Any], None]) -> None:
    """Write a cache file atomically; a cache that cannot be written only costs a warning."""
    write_cache(path, write, owner="novelty.datasets.windshield")


# --- the video ------------------------------------------------------------------------------------
def find_video(doc_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of ``vtest.avi`` from ``opencv-doc`` (``vtest.avi.gz`` is unpacked into the cache first).

    Raises :class:`~novelty.datasets.DatasetNotInstalledError` naming the install step when it is missing.
    """
    if doc_dir is None:  # $NOVELTY_OPENCV_DOC: the package unpacked without root (make windshield-data)
        doc_dir = os.environ.get("NOVELTY_OPENCV_DOC") or OPENCV_DOC_DIR
    root = Path(doc_dir)
    preferred = [root / "examples" / "data" / VIDEO_NAME, root / "examples" / "data" / f"{VIDEO_NAME}.gz"]
    found = [p for p in preferred if p.is_file()]
    if not found and root.is_dir():
        found = sorted(root.rglob(f"{VIDEO_NAME}*"))
        found = [p for p in found if p.is_file() and p.name in (VIDEO_NAME, f"{VIDEO_NAME}.gz")]
    if not found:
        raise DatasetNotInstalledError(
            f"the street video {VIDEO_NAME} was not found under {root}; it ships in the Debian package "
            f"opencv-doc: {INSTALL_HINT}"
        )
    video = found[0]
    if video.suffix != ".gz":
        return video
    unpacked = cache_dir() / f"{VIDEO_NAME[:-4]}-{video.stat().st_size}.avi"
    if not unpacked.is_file():
        with gzip.open(video, "rb") as src, _atomic_file(unpacked) as dst:
            shutil.copyfileobj(src, dst)
    return unpacked


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise DatasetNotInstalledError(
            f"reading the windshield video needs OpenCV (opencv-python-headless): {INSTALL_HINT}"
        ) from exc
    return cv2


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(s, int | np.integer) and 32 <= int(s) <= 4096 for s in size):
        raise InvalidInputError(f"size must be (width, height) with both in 32..4096, got {size!r}")
    return int(size[0]), int(size[1])


def street_frames(
    size: tuple[int, int] = (320, 240),
    *,
    video: str | os.PathLike[str] | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """All 795 frames of the street video as ``(n, H, W, 3)`` uint8 RGB, resized to ``size`` = (width, height).

    Decoded once per size and cached as ``vtest-<bytes>-<W>x<H>.npy`` (about 0.1 s to load at 320×240,
    183 MB; 3.5 s to decode). ``video`` overrides the path of ``vtest.avi``.
    """
    width, height = _check_size(size)
    path = Path(video) if video is not None else find_video()
    if not path.is_file():
        raise DatasetNotInstalledError(f"the street video {path} does not exist: {INSTALL_HINT}")
    folder = _cache_folder(cache_dir)
    target = folder / f"{path.stem}-{path.stat().st_size}-{width}x{height}.npy"
    if cache and target.is_file():
        try:
            frames = np.load(target, allow_pickle=False)
            if frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[1:] == (height, width, 3):
                return frames
        except (OSError, ValueError):
            pass  # unreadable cache: decode again and overwrite it
    frames = _decode(path, width, height)
    if cache:
        _write_cache(target, lambda fh: np.save(fh, frames, allow_pickle=False))
    return frames


def street_dataset(
    conditions: Sequence[str] = ("dry",),
    severity: int = 3,
    seed: int = 0,
    *,
    size: tuple[int, int] = (320, 240),
    frames: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Street frames under each of ``conditions`` as ``(images (n, H, W, 3) uint8, labels (n,) str)``.

    ``frames``: ids of the frames to use (default all 795); the result holds those frames once per
    condition, in that order, labelled with the condition's name (``"dry"``, ``"fog"``, ``"tunnel+wet"``…).
    Deterministic in ``(frame id, condition, severity, seed)`` — see :func:`apply_condition`.
    """
    all_frames = street_frames(size)
    ids = np.arange(len(all_frames)) if frames is None else np.asarray(frames, dtype=np.int64)
    if ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() >= len(all_frames))):
        raise InvalidInputError(f"frames must be ids in 0..{len(all_frames) - 1}")
    if isinstance(conditions, str) or not conditions:
        raise InvalidInputError("conditions must be a non-empty sequence of names, e.g. ('dry', 'fog')")
    images, labels = [], []
    for condition in conditions:
        images.append(apply_condition(all_frames[ids], condition, severity, seed, frame_ids=ids))
        labels += [condition] * int(ids.size)
    return np.concatenate(images), np.array(labels)


def _cache_folder(override: str | os.PathLike[str] | None) -> Path:
    return cache_dir(override)


def _decode(path: Path, width: int, height: int) -> np.ndarray:
    cv2 = _import_cv2()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DatasetNotInstalledError(f"OpenCV cannot open {path}; reinstall opencv-doc ({INSTALL_HINT})")
    out: list[np.ndarray] = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            small = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
            out.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not out:
        raise DatasetNotInstalledError(f"OpenCV decoded no frame from {path}; reinstall opencv-doc")
    return np.stack(out)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _tunnel(frame: np.ndarray, severity: int, rs: np.random.RandomState) -> np.ndarray:
    x = frame.astype(np.float32)
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (1.0 - _TUNNEL_DESATURATE) * x + _TUNNEL_DESATURATE * gray[..., None]
    gain = _TUNNEL_GAIN[severity - 1] * rs.uniform(0.9, 1.1)
    x = x * (gain * _SODIUM_CAST) + _SODIUM_GLOW
    x += rs.normal(0.0, _TUNNEL_NOISE[severity - 1], size=x.shape).astype(np.float32)
    return _to_uint8(x)


def _component(name: str, frame: np.ndarray, severity: int, rs: np.random.RandomState) -> np.ndarray:
    if name == "tunnel":
        return _tunnel(frame, severity, rs)
    if name == "wet":
        return _to_uint8(corrupt("spatter", frame, min(severity, 3), rs))
    corruption = {"ice": "frost", "fog": "fog", "snow": "snow", "glare": "brightness"}[name]
    return _to_uint8(corrupt(corruption, frame, severity, rs))


def _parse_condition(condition: str) -> list[str]:
    if not isinstance(condition, str):
        raise InvalidInputError(f"condition must be a string such as 'tunnel+wet', got {condition!r}")
    parts = [p.strip() for p in condition.split("+")]
    parts = [p for p in parts if p not in ("", "dry", "clean")]
    for p in parts:
        if p not in BASE_CONDITIONS:
            raise UnknownNameError(
                f"unknown condition {p!r} in {condition!r}; use 'dry' or a '+'-join of {', '.join(BASE_CONDITIONS)}"
            )
    if len(set(parts)) != len(parts):
        raise InvalidInputError(f"condition {condition!r} names a component twice")
    return sorted(parts, key=BASE_CONDITIONS.index)


def _frame_rng(seed: int, component: str, frame_id: int) -> np.random.RandomState:
    state = np.random.SeedSequence([seed, _COMPONENT_CODE[component], frame_id]).generate_state(1)[0]
    return np.random.RandomState(int(state))


def apply_condition(
    frames: np.ndarray,
    condition: str,
    severity: int = 3,
    seed: int = 0,
    *,
    frame_ids: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """``frames`` (``(n, H, W, 3)`` or one ``(H, W, 3)`` uint8 RGB) under ``condition``; a new uint8 array.

    ``condition``: ``"dry"``, one of :data:`BASE_CONDITIONS` or a ``+``-join such as ``"tunnel+wet"``.
    ``severity`` 1..5 (``wet`` caps at spatter severity 3, the last one that is water). Pure: the input
    is not modified and the output depends only on the frame, ``condition``, ``severity``, ``seed`` and
    the frame's id (``frame_ids``, default the position in ``frames``). Frames must be at least 32×32.
    """
    arr = np.asarray(frames)
    single = arr.ndim == 3
    if single:
        arr = arr[None]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise InvalidInputError(
            f"frames must be uint8 RGB of shape (n, H, W, 3) or (H, W, 3), got {arr.dtype} {arr.shape}"
        )
    if arr.shape[1] < 32 or arr.shape[2] < 32:
        raise InvalidInputError(f"frames must be at least 32×32 pixels, got {arr.shape[2]}×{arr.shape[1]}")
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or not 1 <= severity <= 5:
        raise InvalidInputError(f"severity must be an integer in 1..5, got {severity!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
    ids = np.arange(len(arr)) if frame_ids is None else np.asarray(frame_ids)
    if ids.shape != (len(arr),) or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any():
        raise InvalidInputError(f"frame_ids must be {len(arr)} non-negative integers")
    components = _parse_condition(condition)
    out = arr.copy()
    for i, fid in enumerate(ids.tolist()):
        img = out[i]
        for name in components:
            img = _component(name, img, int(severity), _frame_rng(int(seed), name, fid))
        out[i] = img
    return out[0] if single else out


# --- the scenario ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConditionSet:
    """Images of one part of the scenario, with one row per image in every array."""

    images: np.ndarray  # (n, H, W, 3) uint8 RGB
    labels: np.ndarray  # (n,) int64: 0 = dry windshield, 1 = wet
    groups: np.ndarray  # (n,) int64: block id (contiguous run of ``block`` frames)
    frames: np.ndarray  # (n,) int64: index of the source frame in street_frames()

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class WindshieldScenario:
    """Train / calibration / test parts of the street video plus the never-seen production conditions.

    ``production[c]`` holds the test frames (same order, labels, groups) under condition ``c``: dry
    frames as ``c``, wet frames as ``c+wet`` (see :meth:`production_conditions`).
    """

    train: ConditionSet
    calibration: ConditionSet
    test: ConditionSet
    production: dict[str, ConditionSet]
    seed: int
    block: int
    size: tuple[int, int]
    severity: int
    split_cycle: tuple[str, ...] = field(default=_SPLIT_CYCLE)

    def production_conditions(self, name: str) -> list[str]:
        """The condition string of each image of ``production[name]``, e.g. ``['tunnel', 'tunnel+wet', …]``."""
        return [name if label == 0 else f"{name}+wet" for label in self.production[name].labels]


def _split(n_frames: int, block: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Frame indices, labels and block ids of each part (deterministic in ``seed``)."""
    frame = np.arange(n_frames)
    block_id = frame // block
    labels = np.zeros(n_frames, dtype=np.int64)
    for b in range(int(block_id[-1]) + 1):
        members = frame[block_id == b]
        rng = np.random.default_rng([seed, b])
        n_wet = (len(members) + int(rng.integers(0, 2))) // 2
        labels[rng.permutation(members)[:n_wet]] = 1
    part = np.array(_SPLIT_CYCLE)[block_id % len(_SPLIT_CYCLE)]
    out = {}
    for name in dict.fromkeys(_SPLIT_CYCLE):
        sel = frame[part == name]
        out[name] = (sel.astype(np.int64), labels[sel], block_id[sel].astype(np.int64))
    return out


def _clean_set(
    frames: np.ndarray, idx: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int, severity: int
) -> ConditionSet:
    images = frames[idx].copy()
    wet = labels == 1
    if wet.any():
        images[wet] = apply_condition(frames[idx[wet]], "wet", severity, seed, frame_ids=idx[wet])
    return ConditionSet(images=images, labels=labels, groups=groups, frames=idx)


def windshield_scenario(
    seed: int = 0,
    block: int = 25,
    size: tuple[int, int] = (320, 240),
    severity: int = 3,
    *,
    n_frames: int | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> WindshieldScenario:
    """The windshield scenario (see the module docstring), built once and cached as an ``.npz``.

    ``n_frames`` keeps only the first frames of the video (tests); the images of the frames it keeps are
    identical to those of the full scenario with the same parameters.
    """
    width, height = _check_size(size)
    if isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 1:
        raise InvalidInputError(f"block must be a positive integer, got {block!r}")
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or not 1 <= severity <= 5:
        raise InvalidInputError(f"severity must be an integer in 1..5, got {severity!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
    video = find_video()
    folder = _cache_folder(cache_dir)
    frames_tag = "all" if n_frames is None else str(int(n_frames))
    target = folder / (
        f"scenario-v{_SCENARIO_FORMAT}-{video.stat().st_size}-seed{seed}-block{block}-"
        f"{width}x{height}-sev{severity}-frames{frames_tag}.npz"
    )
    meta = _Meta(seed=int(seed), block=int(block), size=(width, height), severity=int(severity))
    if cache and target.is_file():
        try:
            return _load_scenario(target, meta)
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: build again and overwrite it
    frames = street_frames((width, height), video=video, cache=cache, cache_dir=cache_dir)
    if n_frames is not None:
        if not 1 <= int(n_frames) <= len(frames):
            raise InvalidInputError(f"n_frames must be in 1..{len(frames)}, got {n_frames!r}")
        frames = frames[: int(n_frames)]
    parts = _split(len(frames), int(block), int(seed))
    sets = {name: _clean_set(frames, *parts[name], int(seed), int(severity)) for name in parts}
    test = sets["test"]
    production = {}
    for name in PRODUCTION_CONDITIONS:
        images = np.empty_like(test.images)
        for label, condition in ((0, name), (1, f"{name}+wet")):
            sel = test.labels == label
            if sel.any():
                images[sel] = apply_condition(
                    frames[test.frames[sel]], condition, int(severity), int(seed), frame_ids=test.frames[sel]
                )
        production[name] = ConditionSet(
            images=images, labels=test.labels, groups=test.groups, frames=test.frames
        )
    scenario = WindshieldScenario(
        train=sets["train"],
        calibration=sets["calibration"],
        test=test,
        production=production,
        seed=meta.seed,
        block=meta.block,
        size=meta.size,
        severity=meta.severity,
    )
    if cache:
        _write_cache(target, lambda fh: _save_scenario(fh, scenario))
    return scenario


@dataclass(frozen=True)
class _Meta:
    seed: int
    block: int
    size: tuple[int, int]
    severity: int


_FIELDS = ("images", "labels", "groups", "frames")


def _save_scenario(fh: Any, scenario: WindshieldScenario) -> None:
    arrays: dict[str, np.ndarray] = {}
    named = {"train": scenario.train, "calibration": scenario.calibration, "test": scenario.test}
    named.update({f"production_{k}": v for k, v in scenario.production.items()})
    for part, cs in named.items():
        for f in _FIELDS:
            arrays[f"{part}__{f}"] = getattr(cs, f)
    np.savez(fh, **arrays)  # type: ignore[arg-type]


def _load_scenario(path: Path, meta: _Meta) -> WindshieldScenario:
    with np.load(path, allow_pickle=False) as data:

        def part(name: str) -> ConditionSet:
            return ConditionSet(**{f: data[f"{name}__{f}"] for f in _FIELDS})

        return WindshieldScenario(
            train=part("train"),
            calibration=part("calibration"),
            test=part("test"),
            production={c: part(f"production_{c}") for c in PRODUCTION_CONDITIONS},
            seed=meta.seed,
            block=meta.block,
            size=meta.size,
            severity=meta.severity,
        )


# --- visual check ---------------------------------------------------------------------------------
SHEET_CONDITIONS: tuple[str, ...] = ("dry", "wet", "tunnel", "ice", "fog", "snow", "tunnel+wet")


def contact_sheet(
    frame_ids: Sequence[int] = (120, 560),
    conditions: Sequence[str] = SHEET_CONDITIONS,
    *,
    size: tuple[int, int] = (320, 240),
    severity: int = 3,
    seed: int = 0,
    font_size: int = 12,
) -> Any:
    """A PIL image: one row per frame of ``frame_ids``, one labelled column per condition."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = _check_size(size)
    frames = street_frames((width, height))
    ids = np.asarray(frame_ids, dtype=np.int64)
    pad = font_size + 8
    sheet = Image.new("RGB", (len(conditions) * width, len(ids) * (height + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=font_size)
    for r, fid in enumerate(ids.tolist()):
        for c, condition in enumerate(conditions):
            img = apply_condition(frames[fid : fid + 1], condition, severity, seed, frame_ids=[fid])[0]
            top = r * (height + pad)
            sheet.paste(Image.fromarray(img), (c * width, top + pad))
            draw.text((c * width + 4, top + 3), f"{condition} (frame {fid})", fill="black", font=font)
    return sheet
