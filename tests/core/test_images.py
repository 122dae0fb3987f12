"""Odd inputs to :func:`novelty.images.load_image`: each decodes right or fails with its own ImageError."""

from __future__ import annotations

import io
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from odd_inputs import (  # tests/odd_inputs.py, next to this file
    CASE_NAMES,
    Reference,
    bomb_png,
    composite,
    grey_photo,
    make_odd_corpus,
    make_odd_corpus_with_references,
    no_hang,
    photo,
)
from PIL import Image

from novelty.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageNotFoundError,
    ImagePermissionError,
    ImageTooLargeError,
    InvalidInputError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)
from novelty.images import DEFAULT_MAX_PIXELS, load_image

Corpus = tuple[dict[str, tuple[Path, type[ImageError] | None]], dict[str, Reference]]

#: cases that only exist as paths (nothing to read as bytes or to open with PIL)
PATH_ONLY = {"a_directory.jpg", "missing.jpg"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_odd_corpus_with_references(tmp_path_factory.mktemp("odd"))


@pytest.fixture(autouse=True)
def no_warnings() -> Iterator[None]:
    """Any warning inside a test (PIL's included) fails it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _case(corpus: Corpus, name: str) -> tuple[Path, type[ImageError] | None, Reference | None]:
    cases, refs = corpus
    if name not in cases:
        pytest.skip(f"{name}: this PIL cannot write the format")
    path, expected = cases[name]
    return path, expected, refs.get(name)


def _pil_open(path: Path) -> Image.Image:
    """``Image.open`` for the test's own use: PIL's warnings on odd headers are not load_image's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Image.open(path)


def _assert_matches(img: Image.Image, ref: Reference) -> None:
    assert img.mode == "RGB"
    assert img.size == ref.size
    if ref.pixels is None:
        return
    got = np.asarray(img).astype(np.int32)
    want = ref.pixels.astype(np.int32)
    assert got.shape == want.shape
    diff = np.abs(got - want)
    assert diff.max() <= ref.max_abs, f"max abs diff {diff.max()} > {ref.max_abs}"
    if ref.mean_abs:
        assert diff.mean() <= ref.mean_abs, f"mean abs diff {diff.mean():.2f} > {ref.mean_abs}"


def _assert_error(err: ImageError, expected: type[ImageError], source: str) -> None:
    assert type(err) is expected, f"{type(err).__name__} raised, {expected.__name__} expected: {err}"
    assert err.source == source
    assert source in str(err)
    assert err.reason and err.reason in str(err)


# --- the corpus ------------------------------------------------------------------------------------------


def test_make_odd_corpus_writes_every_case(tmp_path: Path) -> None:
    cases = make_odd_corpus(tmp_path)
    assert set(cases) <= set(CASE_NAMES)
    assert set(CASE_NAMES) - set(cases) <= {"lossless.webp"}
    for name, (path, expected) in cases.items():
        assert path.parent == tmp_path and path.name == name
        assert expected is None or issubclass(expected, ImageError)
        assert path.exists() == (name != "missing.jpg")
    assert cases["zero_byte.jpg"][0].stat().st_size == 0
    # the bomb is a few hundred bytes, whatever its header claims
    assert cases["bomb_header.png"][0].stat().st_size < 1000


@pytest.mark.parametrize("name", CASE_NAMES)
def test_corpus_from_path(corpus: Corpus, name: str) -> None:
    path, expected, ref = _case(corpus, name)
    if expected is not None:
        with pytest.raises(expected) as info:
            load_image(path)
        _assert_error(info.value, expected, str(path))
        return
    assert ref is not None
    img = load_image(path)
    _assert_matches(img, ref)
    # a str path decodes the same as a Path
    assert np.array_equal(np.asarray(load_image(str(path))), np.asarray(img))


@pytest.mark.parametrize("name", sorted(set(CASE_NAMES) - PATH_ONLY))
def test_corpus_from_bytes(corpus: Corpus, name: str) -> None:
    path, expected, ref = _case(corpus, name)
    data = path.read_bytes()
    source = f"<{len(data)} bytes>"
    for raw in (data, bytearray(data), memoryview(data)):
        if expected is not None:
            with pytest.raises(expected) as info:
                load_image(raw)
            _assert_error(info.value, expected, source)
        else:
            assert ref is not None
            img = load_image(raw)
            _assert_matches(img, ref)
            assert np.array_equal(np.asarray(img), np.asarray(load_image(path)))


@pytest.mark.parametrize("name", sorted(set(CASE_NAMES) - PATH_ONLY))
def test_corpus_from_lazily_opened_pil_image(corpus: Corpus, name: str) -> None:
    """``Image.open`` reads the header only: decoding errors surface in load_image, with their own class."""
    path, expected, ref = _case(corpus, name)
    try:
        pil = _pil_open(path)
    except (OSError, Image.DecompressionBombError):
        assert expected is not None  # PIL refuses the header itself: nothing to pass
        return
    with pil:
        if expected is not None:
            with pytest.raises(expected) as info:
                load_image(pil)
            _assert_error(info.value, expected, f"<PIL {pil.mode} {pil.width}x{pil.height}>")
        else:
            assert ref is not None
            _assert_matches(load_image(pil), ref)


def test_corpus_leaks_no_warning(corpus: Corpus) -> None:
    """Corrupt EXIF, a malformed MPO index, palette transparency...: PIL warns, load_image must not."""
    cases, _ = corpus
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path, expected in cases.values():
            for source in (path, path.read_bytes() if path.is_file() else b""):
                try:
                    load_image(source, min_size=64)
                except ImageError:
                    assert expected is not None
    assert [str(w.message) for w in caught] == []


# --- decoded content ------------------------------------------------------------------------------------


def test_exif_orientation_swaps_the_sides(corpus: Corpus) -> None:
    h, w = photo().shape[:2]
    for name in ("exif_rot6.jpg", "bad_exif.jpg"):
        path, _, _ = _case(corpus, name)
        with _pil_open(path) as raw:
            assert raw.size == (w, h)  # stored landscape
        assert load_image(path).size == (h, w)  # shown portrait
        with _pil_open(path) as raw:  # the orientation is applied to PIL inputs too
            assert load_image(raw).size == (h, w)


def test_animated_gif_gives_its_first_frame(corpus: Corpus) -> None:
    path, _, _ = _case(corpus, "animated.gif")
    with Image.open(path) as gif:
        assert getattr(gif, "n_frames", 1) == 3
    img = load_image(path)
    assert img.size == (40, 30)
    assert (np.asarray(img) == (255, 0, 0)).all()


def test_palette_transparency_over_a_chosen_background(corpus: Corpus) -> None:
    path, _, _ = _case(corpus, "palette_trns.png")
    with Image.open(path) as pal:
        assert pal.mode == "P" and isinstance(pal.info["transparency"], bytes)
        idx = np.asarray(pal)
        palette = np.asarray(pal.getpalette() or [], np.uint8)[: 16 * 3].reshape(16, 3)
        alpha = np.full(256, 255, np.uint8)
        alpha[: len(pal.info["transparency"])] = list(pal.info["transparency"])
    for bg in ((255, 255, 255), (0, 0, 0), (0, 128, 255)):
        got = np.asarray(load_image(path, background=bg)).astype(int)
        a = alpha[idx].astype(float)[..., None] / 255.0
        want = np.round(palette[idx] * a + np.array(bg) * (1.0 - a))
        assert np.abs(got - want).max() <= 1
    # fully transparent pixels (alpha index 0) take the background exactly
    transparent = idx == 0
    assert transparent.any()
    assert (np.asarray(load_image(path, background=(0, 128, 255)))[transparent] == (0, 128, 255)).all()


def test_sixteen_bit_scaled_by_the_full_range(corpus: Corpus) -> None:
    path, _, _ = _case(corpus, "grey16.png")
    with Image.open(path) as im16:
        assert im16.mode == "I;16"
        arr16 = np.asarray(im16).astype(np.uint32)
    got = np.asarray(load_image(path))
    assert np.array_equal(got[..., 0], (arr16 * 255 // 65535).astype(np.uint8))
    assert np.array_equal(got[..., 0], got[..., 2])
    # a dark 16-bit image stays dark: values ≤ 255 out of 65535 are not 8-bit values
    assert np.asarray(load_image(_case(corpus, "grey16_dark.png")[0])).max() == 0


def test_sixteen_bit_transparent_level_takes_the_background(tmp_path: Path) -> None:
    path = tmp_path / "grey16_trns.png"
    Image.fromarray(np.array([[0, 1000, 65535]], np.uint16)).save(path, transparency=1000)
    with Image.open(path) as raw:
        assert raw.mode == "I;16" and raw.info["transparency"] == 1000
    got = np.asarray(load_image(path, background=(0, 128, 255)))
    assert got.tolist() == [[[0, 0, 0], [0, 128, 255], [255, 255, 255]]]


# --- PIL inputs -----------------------------------------------------------------------------------------

_RGB = photo()[::4, ::4].copy()
_GREY = grey_photo()[::4, ::4].copy()
_H, _W = _GREY.shape
_ALPHA = np.broadcast_to(np.linspace(0, 255, _W).round().astype(np.uint8), (_H, _W)).copy()


def _grey3(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


def _pil_case(mode: str) -> tuple[Image.Image, np.ndarray, int]:
    """An image of ``mode`` made from the photo, the RGB it must become, the largest difference allowed."""
    rgb_img = Image.fromarray(_RGB)
    if mode == "1":
        mask = _GREY > 127
        return Image.fromarray(mask), _grey3(np.where(mask, 255, 0).astype(np.uint8)), 0
    if mode == "L":
        return Image.fromarray(_GREY), _grey3(_GREY), 0
    if mode in ("LA", "La"):
        la = Image.fromarray(np.dstack([_GREY, _ALPHA]), "LA")
        # premultiplied alpha loses precision where alpha is small; compare where it is not
        want = composite(_grey3(_GREY), _ALPHA)
        return (la, want, 0) if mode == "LA" else (la.convert("La"), want, 8)
    if mode in ("P", "PA"):
        p = rgb_img.quantize(32)
        flat = p.getpalette()
        assert flat is not None
        palette = np.asarray(flat[: 32 * 3], np.uint8).reshape(32, 3)
        idx = np.asarray(p)
        if mode == "P":
            return p, palette[idx], 0
        pa = Image.merge("PA", (p, Image.fromarray(_ALPHA)))
        pa.putpalette(flat)
        return pa, composite(palette[idx], _ALPHA), 1
    if mode in ("RGB", "RGBX", "CMYK"):
        return rgb_img.convert(mode), _RGB, 0
    if mode in ("RGBA", "RGBa"):
        rgba = Image.fromarray(np.dstack([_RGB, _ALPHA]), "RGBA")
        want = composite(_RGB, _ALPHA)
        return (rgba, want, 1) if mode == "RGBA" else (rgba.convert("RGBa"), want, 8)
    if mode in ("YCbCr", "HSV", "LAB"):
        return rgb_img.convert(mode), _RGB, 12
    if mode == "I":
        return Image.fromarray(_GREY.astype(np.int32) * 256, "I"), _grey3(_GREY), 1
    if mode.startswith("I;16"):
        v16 = _GREY.astype(np.uint16) * 257
        img16 = Image.fromarray(v16)  # mode I;16
        if mode != "I;16":
            raw = v16.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
            img16 = Image.frombytes(mode, img16.size, raw)
        return img16, _grey3(_GREY), 0
    if mode == "F":
        return Image.fromarray(_GREY.astype(np.float32) / 255.0, "F"), _grey3(_GREY), 0
    raise AssertionError(mode)


PIL_MODES = [
    "1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "LAB",
    "I", "I;16", "I;16B", "I;16L", "F",
]  # fmt: skip


@pytest.mark.parametrize("mode", PIL_MODES)
def test_pil_input_of_every_mode(mode: str) -> None:
    try:
        img, want, tol = _pil_case(mode)
    except ValueError as e:  # this PIL cannot build the mode
        pytest.skip(str(e))
    assert img.mode == mode
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (_W, _H)
    diff = np.abs(np.asarray(out).astype(int) - want.astype(int))
    if mode in ("La", "RGBa"):
        diff = diff[_ALPHA >= 32]
    if mode in ("YCbCr", "HSV", "LAB"):  # colour-space round trips: close on average
        assert diff.mean() <= 3.0
    assert diff.max() <= tol, f"{mode}: max abs diff {diff.max()}"


def test_pil_input_keeps_its_frame_and_is_not_modified() -> None:
    rgba = Image.fromarray(np.dstack([_RGB, _ALPHA]), "RGBA")
    before = np.asarray(rgba).copy()
    out = load_image(rgba)
    assert out is not rgba and rgba.mode == "RGBA"
    assert np.array_equal(np.asarray(rgba), before)


def test_pil_input_refused_above_max_pixels() -> None:
    img = Image.new("L", (100, 100))
    with pytest.raises(ImageTooLargeError, match="10,000 pixels exceeds the limit of 9,999"):
        load_image(img, max_pixels=9_999)
    assert load_image(img, max_pixels=10_000).size == (100, 100)


def test_closed_pil_image_is_an_image_error(corpus: Corpus) -> None:
    path, _, _ = _case(corpus, "bitmap.bmp")
    pil = Image.open(path)
    pil.close()
    with pytest.raises(CorruptImageError, match="closed"):
        load_image(pil)


# --- numpy inputs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "want"),
    [
        (lambda: _GREY, lambda: _grey3(_GREY)),
        (lambda: _GREY[..., None], lambda: _grey3(_GREY)),
        (lambda: _RGB, lambda: _RGB),
        (lambda: np.asfortranarray(_RGB), lambda: _RGB),
        (lambda: _RGB[:, ::-1], lambda: _RGB[:, ::-1]),  # negative strides
        (lambda: np.dstack([_RGB, _ALPHA]), lambda: composite(_RGB, _ALPHA)),
        (lambda: _GREY.astype(np.uint16) * 257, lambda: _grey3(_GREY)),
        (lambda: (_RGB.astype(np.uint16) * 257).astype(">u2"), lambda: _RGB),
        (lambda: _GREY.astype(np.uint16), lambda: np.zeros((_H, _W, 3), np.uint8)),  # dark 16-bit
        (lambda: _GREY > 127, lambda: _grey3(np.where(_GREY > 127, 255, 0).astype(np.uint8))),
        (lambda: _RGB / 255.0, lambda: _RGB),
        (lambda: (_RGB / 255.0).astype(np.float32), lambda: _RGB),
        (lambda: _GREY.astype(np.float64), lambda: _grey3(_GREY)),  # floats in [0, 255]
        (lambda: np.zeros((1, 1, 3), np.uint8), lambda: np.zeros((1, 1, 3), np.uint8)),
    ],
    ids=[
        "uint8-HxW", "uint8-HxWx1", "uint8-HxWx3", "fortran-order", "negative-strides", "uint8-HxWx4",
        "uint16", "uint16-big-endian-rgb", "uint16-dark", "bool", "float64-01", "float32-01",
        "float-0-255", "1x1",
    ],
)  # fmt: skip
def test_numpy_input_decodes(make: Callable[[], np.ndarray], want: Callable[[], np.ndarray]) -> None:
    arr = make()
    before = arr.copy()
    out = load_image(arr)
    expected = want()
    assert out.mode == "RGB" and out.size == (expected.shape[1], expected.shape[0])
    assert np.abs(np.asarray(out).astype(int) - expected.astype(int)).max() <= 1
    assert np.array_equal(arr, before)  # the caller's array is not modified


def test_numpy_uint16_matches_the_16bit_png_path() -> None:
    v16 = np.random.default_rng(3).integers(0, 256, (20, 30), dtype=np.uint16)  # dark: every value ≤ 255
    from_array = np.asarray(load_image(v16))
    from_pil = np.asarray(load_image(Image.fromarray(v16)))
    assert np.array_equal(from_array, from_pil)


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.full((8, 8), 1.5) * np.linspace(-1, 1, 8), r"float pixels span \[-1\.5, 1\.5\]"),
        (np.full((8, 8, 3), 300.0), r"float pixels span \[300, 300\]"),
        (np.full((8, 8), np.nan), "NaN or infinity"),
        (np.full((8, 8), np.inf, np.float32), "NaN or infinity"),
        (np.full((8, 8), -3, np.int16), "negative pixel values"),
        (np.full((8, 8), 70_000, np.int32), "exceed 16 bits"),
        (np.zeros((8, 8), np.complex64), "dtype complex64"),
        (np.zeros((8, 8), object), "dtype object"),
        (np.zeros((3, 40, 50), np.uint8), r"channels first\? transpose it: arr\.transpose\(1, 2, 0\)"),
        (np.zeros((4, 40, 50), np.float32), r"channels first\?"),
        (np.zeros((2, 40, 50, 3), np.uint8), r"shape \(2, 40, 50, 3\) is not HxW"),
        (np.zeros((40, 50, 2), np.uint8), r"shape \(40, 50, 2\)"),
        (np.zeros(10, np.uint8), r"shape \(10,\)"),
        (np.array(7, np.uint8), r"shape \(\)"),
        (np.zeros((0, 10, 3), np.uint8), "zero height or width"),
        (np.zeros((10, 0), np.uint8), "zero height or width"),
    ],
    ids=[
        "float-negative", "float-above-255", "nan", "inf", "negative-int", "above-16-bit", "complex",
        "object", "channels-first-3", "channels-first-4", "4-d", "HxWx2", "1-d", "0-d", "zero-height",
        "zero-width",
    ],
)  # fmt: skip
def test_numpy_input_errors(arr: np.ndarray, match: str) -> None:
    with pytest.raises(UnsupportedImageError, match=match) as info:
        load_image(arr)
    assert info.value.source == f"<array {arr.dtype} {tuple(arr.shape)}>"


def test_numpy_refused_above_max_pixels_before_conversion() -> None:
    arr = np.full((100, 200), np.nan)  # would fail conversion: the size check comes first
    with pytest.raises(ImageTooLargeError, match="200x100"):
        load_image(arr, max_pixels=19_999)


# --- max_pixels: refused from the header, fast ----------------------------------------------------------


def test_bomb_refused_fast_from_the_header(corpus: Corpus) -> None:
    path, _, _ = _case(corpus, "bomb_header.png")
    data = path.read_bytes()
    for source in (path, data):
        for max_pixels in (DEFAULT_MAX_PIXELS, 10**6, None):
            t0 = time.perf_counter()
            with pytest.raises(ImageTooLargeError, match=r"400000000 pixels|20000x20000"):
                load_image(source, max_pixels=max_pixels)
            assert time.perf_counter() - t0 < 1.0


TOO_LARGE_5000 = r"5000x5000 = 25,000,000 pixels exceeds the limit of 1,000,000"


def test_max_pixels_refuses_before_decoding(tmp_path: Path) -> None:
    # 5000×5000 claims 25 M pixels (below PIL's own guard); its IDAT holds a few bytes, so decoding would
    # fail with TruncatedImageError — ImageTooLargeError proves nothing was decoded
    path = tmp_path / "big.png"
    path.write_bytes(bomb_png(5000, 5000))
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=TOO_LARGE_5000):
        load_image(path, max_pixels=1_000_000)
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(TruncatedImageError):
        load_image(path)  # within the default limit the (missing) pixels are decoded


# --- JPEG draft mode ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("draft") / "astronaut_2000x1500.jpg"
    big = Image.fromarray(skimage.data.astronaut()).resize((2000, 1500), Image.Resampling.BILINEAR)
    big.save(path, quality=90)
    return path


def test_jpeg_draft_mode_with_min_size(big_jpeg: Path) -> None:
    full = load_image(big_jpeg)
    assert full.size == (2000, 1500)
    small = load_image(big_jpeg, min_size=256)
    assert min(small.size) >= 256
    assert small.width < 2000 and small.height < 1500
    assert small.size == (500, 375)  # DCT scaling by 1/4: 1/8 would give 188 < 256 rows
    # the reduced decode shows the same picture
    ref = np.asarray(full.resize(small.size, Image.Resampling.BOX)).astype(int)
    assert np.abs(np.asarray(small).astype(int) - ref).mean() < 4
    assert load_image(big_jpeg.read_bytes(), min_size=256).size == (500, 375)
    assert load_image(big_jpeg, min_size=1000).size == (2000, 1500)  # 1500 // 1000 = 1: no scaling
    assert load_image(big_jpeg, min_size=100).size == (250, 188)  # 1/8: both sides still ≥ 100


def test_min_size_ignored_by_other_formats(corpus: Corpus) -> None:
    path, _, ref = _case(corpus, "bitmap.bmp")
    assert ref is not None
    assert load_image(path, min_size=16).size == ref.size


# --- paths and arguments --------------------------------------------------------------------------------


def test_path_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file.png"
    Image.new("RGB", (4, 4)).save(a_file)
    not_a_dir, nul, too_long = (
        str(a_file / "child.png"),
        str(tmp_path / "nul\x00byte.png"),
        "x" * 300 + ".png",
    )
    for bad in (not_a_dir, nul, tmp_path / too_long):
        with pytest.raises(ImageNotFoundError):
            load_image(bad)
    with pytest.raises(NotAnImageError, match="is a directory"):
        load_image(tmp_path)
    if Path("/dev/null").exists():  # a character device: refused without reading it
        with pytest.raises(NotAnImageError, match="not a regular file"):
            load_image("/dev/null")
    with pytest.raises(EmptyImageError, match="zero bytes"):
        load_image(b"")


@pytest.mark.parametrize("source", [None, 42, 3.5, ["a.png"], {"path": "a.png"}, io.BytesIO(b"x")])
def test_wrong_source_type(source: object) -> None:
    with pytest.raises(InvalidInputError, match="pass a path, bytes, a PIL image or a numpy array"):
        load_image(source)  # type: ignore[arg-type]


BAD_KWARGS = [
    {"min_size": -1},
    {"min_size": 2.5},
    {"min_size": True},
    {"max_pixels": 0},
    {"max_pixels": "1e6"},
]


@pytest.mark.parametrize("kwargs", BAD_KWARGS)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(InvalidInputError):
        load_image(np.zeros((4, 4), np.uint8), **kwargs)


def test_numpy_integer_arguments_accepted(big_jpeg: Path) -> None:
    min_size, max_pixels = np.int64(256), np.int32(4_000_000)
    assert load_image(big_jpeg, min_size=min_size, max_pixels=max_pixels).size == (500, 375)  # type: ignore[arg-type]


@pytest.mark.parametrize("keep", [300, 1000])
def test_jpeg_cut_early_is_reported_as_truncated(keep):
    buf = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buf, "JPEG", quality=90)
    with pytest.raises(TruncatedImageError, match=r"truncated|ends inside"):
        load_image(buf.getvalue()[:keep])


def test_permission_denied_has_its_own_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not "corrupt": the file may be fine, this process may not read it (root reads everything, so the
    refusal is simulated at the system call)."""
    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)
    real_open = os.open

    def deny(p, *args, **kwargs):
        if os.fspath(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(ImagePermissionError, match="permission denied") as e:
        load_image(path)
    assert e.value.reason_code == "permission_denied" and not isinstance(e.value, CorruptImageError)


def test_a_file_replaced_by_a_fifo_after_its_stat_never_blocks(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    regular = path.stat()
    path.unlink()
    os.mkfifo(path)
    real_stat = Path.stat
    monkeypatch.setattr(Path, "stat", lambda self, **kw: regular if self == path else real_stat(self, **kw))
    with no_hang(), pytest.raises(NotAnImageError, match="not a regular file"):
        load_image(path)
