"""One folder rule (novelty.discovery) for the library (NoveltyDetector.fit(folder)) and the batch layer."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from odd_inputs import no_hang  # tests/odd_inputs.py, next to this file
from PIL import Image

from novelty.batch.sources import expand_inputs
from novelty.discovery import image_files, is_image_name, looks_like_image, walk_folder
from novelty.embedder import as_source_list
from novelty.errors import InvalidInputError, NotAnImageError, UnsupportedImageError
from novelty.images import load_image


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


def put(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n" + b"\x00" * 20


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "train"
    put(root / "a.jpg", jpeg())
    put(root / "README.txt", "how these photos were taken\n")  # a stray text file: not an image
    put(root / ".cache" / "thumb.jpg", jpeg())  # a hidden folder: skipped
    put(root / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    put(root / "sub" / "b.jpg", jpeg())
    put(root / "sub" / "noext", jpeg())  # found by its signature
    put(root / "photo.jxl", b"\xff\x0a" + b"\x01" * 40)  # the suffix says image; no decoder reads it
    put(root / "container", JXL_CONTAINER)  # an extensionless JPEG XL: found by its signature
    os.mkfifo(root / "pipe.jpg")  # never opened
    return root


def test_the_library_and_the_batch_layer_find_the_same_files(folder: Path):
    with no_hang():
        batch = [it.key for it in expand_inputs([folder])]
        api = [os.fspath(p) for p in as_source_list(folder)]
        api_relative = [os.path.abspath(p) for p in as_source_list(os.path.relpath(folder))]
    expected = [str(folder / n) for n in ("a.jpg", "container", "photo.jxl", "sub/b.jpg", "sub/noext")]
    assert api == batch == expected
    assert api_relative == expected
    assert [f.kind for f in walk_folder(folder)] == ["image"] * 5


def test_image_suffixes_without_a_decoder_fail_loudly(folder: Path):
    assert is_image_name("x.jxl") and is_image_name("X.HEIC") and is_image_name("raw.DNG")
    assert looks_like_image(JXL_CONTAINER) and not looks_like_image(b"how these photos were taken")
    for name in ("photo.jxl", "container"):
        with pytest.raises((NotAnImageError, UnsupportedImageError)):
            load_image(folder / name)


def test_the_library_refuses_what_it_cannot_read(folder: Path, tmp_path: Path):
    with zipfile.ZipFile(folder / "more.zip", "w") as zf:
        zf.writestr("c.jpg", jpeg())
    with pytest.raises(InvalidInputError, match=r"more\.zip: an archive.*expand_inputs"):
        as_source_list(folder)
    assert f"{folder / 'more.zip'}::c.jpg" in [it.key for it in expand_inputs([folder])]  # read by the batch
    empty = tmp_path / "empty"
    put(empty / "notes.txt", "nothing here")
    with pytest.raises(InvalidInputError, match=r"no image files \(skipped: 1 not an image\)"):
        image_files(empty)
